"""The review inbox (``data/inbox/``): images waiting for a person, and where they go after.

Images arrive from the server (answers it doubted, with ``CAPTURE``; answers a crawler reported
wrong), from ``POST /api/v1/feedback`` (labelled by the sender), from ``capforge prelabel``, or
dropped in by hand. Each ``<key>.<ext>`` may have a ``<key>.json`` record: the model's answer, its
confidence, the model version, the time, where it came from. Answers kept only in case a crawler
reports their outcome wait in ``data/inbox/awaiting/`` (the newest ``OUTCOME_WINDOW``) and are not
reviewed unless reported wrong.

A reviewed image becomes a labelled file in the pool (``<label>_<key>.<ext>``, or a row of
``data/pool/reviewed/labels.csv`` when the label cannot be a file name), its provenance appended
to ``data/provenance.jsonl``; an unreadable one goes to quarantine with the reason. Nothing is
deleted, and every file is written under a temporary name first. (The inbox and the review pass
over it are one concept, used alike by the server, the page, the terminal and prelabel: hence
this module's length.)
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from capforge.atomic import write_atomically
from capforge.check import Finding, quarantine
from capforge.data.images import IMAGE_SUFFIXES
from capforge.data.labels import LABEL_FILES, configured_charset
from capforge.errors import DataError, ReviewError
from capforge.modes import MODE_CLASSES
from capforge.workspace import Workspace

AWAITING = "awaiting"
PROVENANCE = "provenance.jsonl"
REVIEWED = "reviewed"  # the pool sub-folder whose labels.csv holds labels that cannot be file names
MAX_LABEL = 64
Answers = Callable[[list[Path]], list[tuple[str, float]]]  # image files -> (answer, confidence) each
KEY = re.compile(r"^[^./\\\x00][^/\\\x00]{0,199}$")  # a file stem in the inbox: never a path


def content_key(data: bytes) -> str:
    """The key of an image: its content hash (the server's request id)."""
    return hashlib.sha256(data).hexdigest()[:20]


def now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


@dataclass
class Item:
    """One inbox image and its record."""

    key: str
    image: Path
    record: dict[str, Any]

    @property
    def answer(self) -> str:
        """What the review pre-fills: the sender's label, else the model's answer."""
        return self.record.get("label") or self.record.get("answer") or ""

    @property
    def order(self) -> tuple[int, int, float, str, str]:
        """Review order: skipped ones last; first the answers the site said were wrong, then label
        suspects (the most confident disagreement first), then the least confident answers (then
        the oldest)."""
        confidence = self.record.get("confidence")
        value = confidence if isinstance(confidence, (int, float)) else -1.0
        tier = 0 if self.record.get("outcome") == "wrong" else 1 if "origin" in self.record else 2
        return (self.record.get("skipped", 0), tier, -value if tier == 1 else value, self.record.get("time", ""),
                self.key)

    def describe(self) -> str:
        r = self.record
        parts = [f"from {r.get('source', 'a person (dropped in by hand)')}"]
        if r.get("answer") is not None:
            parts.append(f"model answered {r['answer']!r} at confidence {r.get('confidence', 0):.2f}")
        if r.get("outcome") == "wrong":
            parts.append(f"the site said {r.get('answer', '')!r} was WRONG")
        if r.get("label"):
            parts.append(f"labelled {r['label']!r} by the sender")
        if r.get("origin"):
            parts.append(f"labelled {r.get('origin_label', '')!r} in {r['origin']}; a model trained without it "
                         "reads otherwise")
        return "; ".join(parts)


class Inbox:
    """The inbox of one workspace, with the checks a label must pass before it is written."""

    def __init__(self, workspace: Workspace, settings: Mapping[str, Any]) -> None:
        self.workspace, self.settings = workspace, settings
        self.folder = workspace.inbox
        self.mode = MODE_CLASSES[settings["MODE"]]
        charset = configured_charset(settings)
        self.allowed = set(charset) if charset is not None else None
        self._awaiting_written = 0
        self._tally: tuple[float, int, int] | None = None  # (when, files, bytes) of the last count

    # --- arriving ---------------------------------------------------------------------------
    def room(self, extra_bytes: int) -> bool:
        """Whether ``extra_bytes`` more fit under INBOX_MAX_FILES and INBOX_MAX_MB (the folder is
        counted at most once a second: a server under load asks for every doubtful answer)."""
        if self._tally is None or time.monotonic() - self._tally[0] > 1.0:
            files = [p for p in self.folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES] \
                if self.folder.is_dir() else []
            self._tally = (time.monotonic(), len(files), sum(p.stat().st_size for p in files))
        _, count, size = self._tally
        return count < self.settings["INBOX_MAX_FILES"] and \
            size + extra_bytes <= self.settings["INBOX_MAX_MB"] * 1_000_000

    def add(self, data: bytes, suffix: str, record: Mapping[str, Any], awaiting: bool = False) -> Item | None:
        """Keep ``data`` (an image file's bytes) with ``record``; None when it is there already or
        the inbox is full. ``awaiting``: kept only for an outcome report."""
        key = content_key(data)
        folder = self.folder / AWAITING if awaiting else self.folder
        if self.find(key) is not None or (not awaiting and not self.room(len(data))):
            return None
        folder.mkdir(parents=True, exist_ok=True)
        image = folder / f"{key}{suffix}"
        full = {"key": key, "time": now(), **record}
        write_atomically(image, data)
        write_atomically(image.with_suffix(".json"), json.dumps(full, ensure_ascii=False).encode())
        if self._tally is not None and not awaiting:
            self._tally = (self._tally[0], self._tally[1] + 1, self._tally[2] + len(data))
        if awaiting:  # counting the folder is the cost: every tenth of the window (at most 100) writes
            self._awaiting_written += 1
            if self._awaiting_written % min(100, max(1, self.settings["OUTCOME_WINDOW"] // 10)) == 0:
                self.prune_awaiting()
        return Item(key, image, full)

    def prune_awaiting(self) -> None:
        """Drop the answers older than the newest OUTCOME_WINDOW: like a cache's entries, they hold
        no label, only what a report on them would need."""
        folder = self.folder / AWAITING
        dated = []
        for path in folder.glob("*") if folder.is_dir() else []:
            if path.suffix.lower() in IMAGE_SUFFIXES:
                try:
                    dated.append((path.stat().st_mtime, path))
                except FileNotFoundError:  # another server process pruned it meanwhile
                    continue
        images = [path for _, path in sorted(dated)]
        for image in images[:max(0, len(images) - self.settings["OUTCOME_WINDOW"])]:
            for path in (image, image.with_suffix(".json")):
                path.unlink(missing_ok=True)

    # --- reading ------------------------------------------------------------------------------
    def _item(self, image: Path) -> Item:
        record_path = image.with_suffix(".json")
        try:
            record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else {}
        except (OSError, ValueError):
            record = {}
        return Item(image.stem, image, record)

    def items(self) -> list[Item]:
        """The images waiting for review, in review order."""
        if not self.folder.is_dir():
            return []
        found = [self._item(p) for p in self.folder.iterdir()
                 if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
        return sorted(found, key=lambda item: item.order)

    def find(self, key: str) -> Item | None:
        """The inbox image (waiting for review or for a report) called ``key``."""
        if not KEY.match(key):
            return None
        for folder in (self.folder, self.folder / AWAITING):
            for suffix in IMAGE_SUFFIXES:
                if (folder / f"{key}{suffix}").is_file():
                    return self._item(folder / f"{key}{suffix}")
        return None

    def fill_answers(self, items: list[Item], predict: Answers,
                     version: str) -> list[Item]:
        """Give items without an answer (dropped in by hand) the model's, saved with them; re-sorted."""
        missing = [item for item in items if "answer" not in item.record and "label" not in item.record]
        if missing:
            for item, (text, confidence) in zip(missing, predict([i.image for i in missing])):
                item.record.update({"key": item.key, "source": item.record.get("source", "dropped in by hand"),
                                    "answer": text, "confidence": confidence, "model_version": version,
                                    "time": now()})
                self._save(item)
        return sorted(items, key=lambda item: item.order)

    def _save(self, item: Item) -> None:
        write_atomically(item.image.with_suffix(".json"), json.dumps(item.record, ensure_ascii=False).encode())

    # --- leaving ------------------------------------------------------------------------------
    def label_problem(self, label: str) -> str | None:
        """Why ``label`` cannot be written for this workspace, or None."""
        if not isinstance(label, str) or not label.strip():
            return "the label is empty"
        if len(label) > MAX_LABEL or not label.isprintable() or label != label.strip():
            return f"label {label[:80]!r} must be 1-{MAX_LABEL} printable characters without surrounding spaces"
        if self.mode.labels_by_folder and (label.startswith(".") or any(c in label for c in "/\\")):
            return f"class {label!r} would be a folder name: no '/', '\\' or leading '.'"
        problem = self.mode.label_problem(label, self.settings, self.allowed)
        if problem is None:
            return None
        rules = [f"symbols of CHARSET {''.join(sorted(self.allowed))!r}" if self.allowed else "any symbol"]
        if self.mode.length_capped:
            rules.append(f"at most CAPTCHA_LENGTH={self.settings['CAPTCHA_LENGTH']} of them")
        return f"{problem[1]}; allowed: {', '.join(rules)}"

    def label(self, item: Item, label: str, by: str) -> Path:
        """Write ``item`` into the pool as labelled ``label`` (a label suspect: into its split, in
        place of the file it was copied from); record who labelled it (``by``: a person or the
        site); remove it from the inbox. Returns the labelled file."""
        problem = self.label_problem(label)
        if problem:
            raise DataError(problem)
        if not self.settings["CASE_SENSITIVE"]:
            label = label.lower()
        origin = self.workspace.root / item.record["origin"] if item.record.get("origin") else None
        if origin is not None and not origin.is_file():
            raise DataError(f"{item.record['origin']} is no longer there; skip this image "
                            "(it was moved or relabelled since check_file.py --suspects)")
        entry = {**item.record, "label": label, "labelled_by": by, "labelled_at": now()}
        if origin is not None and label == item.record.get("origin_label"):  # confirmed: it stays
            target, entry["confirmed"] = origin, True
            os.remove(item.image)  # a copy: the image itself is where it was
        else:
            folder = self.workspace.split_dir(item.record["origin_split"]) if origin else self.workspace.pool
            target = self._place(folder, item, label)
            os.replace(item.image, target)
            if origin is not None:
                os.remove(origin)  # its bytes are the labelled file now: a rename, under its new label
        self._provenance({**entry, "file": self.workspace.relative(target)})
        item.image.with_suffix(".json").unlink(missing_ok=True)  # its content is in provenance.jsonl now
        return target

    def _place(self, folder: Path, item: Item, label: str) -> Path:
        """Where ``item`` goes in ``folder`` labelled ``label`` (a class sub-folder, the label in the
        file name, or a row of the folder's labels file); the labels file row is written here."""
        suffix = item.image.suffix
        folder.mkdir(parents=True, exist_ok=True)
        listed = next((folder / n for n in LABEL_FILES if (folder / n).is_file()), None)
        if self.mode.labels_by_folder:
            target = folder / label / f"{item.key}{suffix}"
        elif listed is None and not any(c in label for c in f"{self.settings['LABEL_SEPARATOR']}/\\.:*?\"<>|"):
            target = folder / f"{label}_{item.key}{suffix}"
        else:  # the folder lists its labels, or the label cannot be a file name
            sub = folder if listed is not None else folder / REVIEWED
            target = sub / f"{item.key}{suffix}"
            self._append_label(listed or sub / "labels.csv", target.name, label)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            raise DataError(f"{self.workspace.relative(target)} exists already; nothing was moved")
        return target

    def _append_label(self, labels_file: Path, name: str, label: str) -> None:
        labels_file.parent.mkdir(parents=True, exist_ok=True)
        if labels_file.suffix == ".csv":
            row = io.StringIO()
            csv.writer(row).writerow([name, label])
            line = row.getvalue()
        else:
            line = f"{name}\t{label}\n"
        with labels_file.open("a", encoding="utf-8", newline="") as out:
            out.write(line)

    def _provenance(self, entry: Mapping[str, Any]) -> None:
        with (self.workspace.data / PROVENANCE).open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def unreadable(self, item: Item, reason: str) -> Path:
        """Move ``item`` to data/quarantine with ``reason``; returns where it went."""
        moved = quarantine([Finding(item.image, "unreadable", reason or "marked unreadable in review")],
                           self.workspace)[0][1]
        record = item.image.with_suffix(".json")
        if record.is_file():
            os.replace(record, moved.with_suffix(".json"))
        return moved

    def skip(self, item: Item) -> None:
        """Put ``item`` at the back of the queue (it is not answered now)."""
        item.record["skipped"] = item.record.get("skipped", 0) + 1
        item.record["time"] = now()
        self._save(item)

    def report(self, item: Item, outcome: str) -> Path | None:
        """A crawler's outcome for ``item``: right labels it with the answer (site-verified);
        wrong sends it to the front of the review queue. Returns the labelled file, if any."""
        if outcome == "right":
            return self.label(item, item.record.get("answer", ""), "site")
        item.record["outcome"] = "wrong"
        self._save(item)
        if item.image.parent != self.folder:  # awaiting: into the review queue
            for path in (item.image.with_suffix(".json"), item.image):
                os.replace(path, self.folder / path.name)
        return None


ACTIONS = ("label", "skip", "unreadable")


class Review:
    """A pass over one inbox in review order, the same for the page, the HTTP API and the
    terminal. ``answers`` (the workspace's model) pre-fills images dropped in by hand."""

    def __init__(self, inbox: Inbox, answers: Answers | None = None, version: str = "") -> None:
        self.inbox, self.answers, self.version = inbox, answers, version

    def next(self) -> tuple[Item | None, int]:
        """The image to review now (None when done) and how many are waiting."""
        items = self.inbox.items()
        if items and self.answers is not None:
            items = self.inbox.fill_answers(items, self.answers, self.version)
        return (items[0] if items else None), len(items)

    def act(self, key: str, action: str, label: str = "", reason: str = "") -> Path | None:
        """Apply a person's answer to the image ``key``: 'label' it ``label`` (into the pool),
        'skip' it, or mark it 'unreadable' (into quarantine, with ``reason``). Returns where it went."""
        if action not in ACTIONS:
            raise ReviewError("invalid_action", f"action {str(action)[:40]!r} is not one of {', '.join(ACTIONS)}")
        item = self.inbox.find(key) if isinstance(key, str) else None
        if item is None or item.image.parent != self.inbox.folder:
            raise ReviewError("unknown_item", f"the inbox holds no image {str(key)[:40]!r} waiting for review "
                              "(reviewed already?)")
        if action == "skip":
            self.inbox.skip(item)
            return None
        if action == "unreadable":
            return self.inbox.unreadable(item, reason)
        try:
            return self.inbox.label(item, label, "person")
        except DataError as exc:
            raise ReviewError("invalid_label", str(exc)) from None
