"""``capforge review works/x``: the review inbox in a terminal, one image at a time, keyboard only.

Each image is drawn with coloured half-block characters (when the output is a terminal), with the
model's answer pre-filled: Enter accepts it, typing a label corrects it, ``/s`` skips, ``/u
[reason]`` marks it unreadable, ``/q`` stops. Lines come from standard input, so a script can
review too.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Callable

from capforge.errors import ReviewError
from capforge.inbox import Review

HELP = "Enter: accept the answer in [brackets] | type a label, Enter: correct it | /s: skip | " \
       "/u [reason]: unreadable | /q: stop"


def picture(path: Path, width: int = 64) -> str:
    """The image as rows of '▀' whose foreground is one pixel row and background the next."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    height = max(2, round(image.height * width / image.width / 2) * 2)
    pixels = image.resize((width, height)).load()
    rows = []
    for y in range(0, height, 2):
        cells = [f"\x1b[38;2;{';'.join(map(str, pixels[x, y]))}m\x1b[48;2;{';'.join(map(str, pixels[x, y + 1]))}m▀"
                 for x in range(width)]
        rows.append("".join(cells) + "\x1b[0m")
    return "\n".join(rows)


def review_in_terminal(review: Review, read: Callable[[str], str] = input, write: Callable[[str], None] = print,
                       pictures: bool = False) -> Counter:
    """Review until the inbox is empty, everything left was skipped this time, input ends or
    ``/q``; returns the counts of what was done."""
    done: Counter = Counter()
    skipped: set[str] = set()
    write(HELP)
    while True:
        item, left = review.next()
        if item is None or item.key in skipped:
            write("the inbox is empty" if item is None else f"{left} left, all skipped this time")
            break
        write(f"[{left} left] {review.inbox.workspace.relative(item.image)}: {item.describe()}")
        if pictures:
            write(picture(item.image))
        try:
            line = read(f"label [{item.answer}]: ").strip()
        except EOFError:
            break
        if line == "/q":
            break
        action, label, reason = ("skip", "", "") if line == "/s" else ("unreadable", "", line[2:].strip()) \
            if line.startswith("/u") else ("label", line or item.answer, "")
        try:
            stored = review.act(item.key, action, label, reason)
        except ReviewError as exc:
            write(f"  not written: {exc}")
            continue
        done[action] += 1
        if action == "skip":
            skipped.add(item.key)
        write(f"  {action}: {review.inbox.workspace.relative(stored)}" if stored else f"  {action}")
    write(", ".join(f"{count} {action}" for action, count in sorted(done.items())) or "nothing reviewed")
    return done
