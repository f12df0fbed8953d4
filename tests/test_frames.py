"""Animated captchas: every step reads all frames, merged as FRAMES says."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
from PIL import Image

from capforge import Recognizer
from capforge.data.generate import CaptchaSpec, animate, render
from capforge.data.images import Preprocessing, preprocess_to_uint8
from clean_data import render as clean_digits
from conftest import run_script


def animation(label: str, seed: int) -> bytes:
    """``label`` in clean digits, shown across four GIF frames of which the first holds none."""
    return animate(clean_digits(label, 96, 32, random.Random(seed)), len(label), 4, random.Random(seed))


def test_a_gif_whose_characters_come_later_is_read_merged_and_not_from_its_first_frame(own_works: Path) -> None:
    labels = ["3071", "958", "2246", "813", "6405"]
    gifs = [animation(label, i) for i, label in enumerate(labels)]
    assert all(Image.open(io.BytesIO(g)).n_frames == 4 for g in gifs)
    first = Recognizer(own_works / "digits")
    assert not any(first.recognize(g)["result"] == label for g, label in zip(gifs, labels))
    # the model as save_model.py exports it from a workspace with FRAMES = 'darkest' (still images
    # train alike under every merge: a still image is its own darkest frame)
    manifest_path = own_works / "digits" / "exports" / "current" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["preprocessing"]["frames"] = "darkest"
    manifest_path.write_text(json.dumps(manifest))
    merged = Recognizer(own_works / "digits")
    read = [merged.recognize(g)["result"] for g in gifs]
    assert sum(r == label for r, label in zip(read, labels)) >= 4, read


def test_the_generator_draws_characters_across_frames_and_every_merge_reads_a_still_image_alike() -> None:
    spec = CaptchaSpec("0123456789", 4, 4, 160, 60, "gif", frames=5)
    gif = render(spec, "4821", 0, 0)
    frames = Image.open(io.BytesIO(gif)).n_frames
    p = {how: Preprocessing(60, 160, 1, "stretch", how) for how in ("first", "last", "darkest", "median", "lightest")}
    first, darkest = preprocess_to_uint8(gif, p["first"]), preprocess_to_uint8(gif, p["darkest"])
    assert frames == 5 and first.std() < darkest.std() / 2  # the first frame: background and specks only
    still = Image.new("L", (160, 60), 255)
    still.paste(0, (40, 20, 120, 40))
    arrays = [preprocess_to_uint8(still, q) for q in p.values()]
    assert all(np.array_equal(arrays[0], a) for a in arrays[1:])


def test_check_file_counts_animations_says_what_frames_reads_and_finds_no_false_duplicates(workspace: Path) -> None:
    # every GIF's first frame is the same blank background: only their later frames tell them apart
    spec = CaptchaSpec("0123456789", 4, 4, 96, 32, "gif", frames=3)
    pool = workspace / "data" / "pool"
    for i, label in enumerate(["1234", "5678", "9012"]):
        frames = [Image.new("RGB", (96, 32), "white")] + [clean_digits(label, 96, 32, random.Random(i)).convert("RGB")] * 2
        frames[0].save(pool / f"{label}_{i}.gif", save_all=True, append_images=frames[1:], duration=100)
    (pool / "1234_again.gif").write_bytes((pool / "1234_0.gif").read_bytes())
    (pool / "4821_x.gif").write_bytes(render(spec, "4821", 0, 0))
    result = run_script(workspace, "check_file.py")
    assert "5 animated images (2-3 frames); FRAMES = 'first' reads only their first frame" in result.stdout, result.stdout
    assert "duplicate" in result.stdout and "1234_again.gif" in result.stdout
    assert "label_conflict" not in result.stdout and "5678_1.gif" not in result.stdout, result.stdout
