"""GRID: a tile classifier answers whole photo-grid captchas with the tiles to click."""

from __future__ import annotations

import base64
import json
import random
import shutil
from pathlib import Path

import pytest
import requests
from PIL import Image

from capforge import Recognizer
from capforge.cli import invoke
from capforge.errors import SettingsError
from capforge.settings import load_settings
from capforge.workspace import create_workspace
from clean_data import PHOTO_CLASSES, fill_photo_pool
from conftest import run_script, running_app

GRID = (2, 3, 4, 40, 32, 32, 36, 36)  # 2 x 3 tiles of 32 pixels, 36 apart, under the prompt
PROMPT = (4, 4, 36, 36)  # the prompt: a picture of the class to click ("every picture like this one")


def grid_captchas(folder: Path, count: int, seed: int) -> tuple[dict[str, list[int]], dict[str, str]]:
    """Whole captchas built from fresh tiles of known classes: each asks for one class, shown as an
    example picture, that 1-3 of its 6 tiles show. Returns each captcha's tiles to click and its prompt."""
    tiles = folder.parent / "fresh_tiles"
    fill_photo_pool(tiles, 240, seed=seed)
    by_class = {name: sorted((tiles / name).glob("*.png")) for name in PHOTO_CLASSES}
    rng, answers, prompts = random.Random(seed), {}, {}
    for n in range(count):
        prompt = rng.choice(sorted(PHOTO_CLASSES))
        others = [c for c in PHOTO_CLASSES if c != prompt]
        wanted = sorted(rng.sample(range(6), rng.randint(1, 3)))
        canvas = Image.new("RGB", (112, 112), "white")
        canvas.paste(Image.open(rng.choice(by_class[prompt])), PROMPT[:2])
        for i in range(6):
            name = prompt if i in wanted else rng.choice(others)
            r, c = divmod(i, 3)
            canvas.paste(Image.open(rng.choice(by_class[name])), (4 + 36 * c, 40 + 36 * r))
        canvas.save(folder / f"grid{n}.png")
        answers[f"grid{n}"], prompts[f"grid{n}"] = wanted, prompt
    shutil.rmtree(tiles)
    return answers, prompts


def test_a_grid_workspace_answers_whole_captchas_with_the_tiles_to_click(tmp_path: Path) -> None:
    ws = create_workspace(tmp_path / "works", "grid", "GRID")
    with (ws.root / "settings.py").open("a") as f:
        f.write(f"IMAGE_HEIGHT = 32\nIMAGE_WIDTH = 32\nIMAGE_CHANNELS = 3\nEPOCHS = 12\nBATCH_SIZE = 16\n"
                f"GRID = {GRID}\nGRID_PROMPT = {PROMPT}\n")
    fill_photo_pool(ws.pool, 240)
    grid = ws.data / "grid"
    grid.mkdir()
    answers, prompts = grid_captchas(grid, 20, seed=5)
    (grid / "answers.txt").write_text("".join(f"{k}.png:{' '.join(map(str, v))}\n" for k, v in answers.items()))
    (grid / "prompts.txt").write_text("".join(f"{k}:{v}\n" for k, v in prompts.items()))
    for step in ("split", "pack", "train", "export"):
        assert invoke(step, ws.root, []) == 0, step
    tested = run_script(ws.root, "test.py")
    assert tested.returncode == 0 and "whole captchas: 20, answered exactly" in tested.stdout, tested.stdout[-3000:]
    report = json.loads((ws.root / "reports" / "test_report.json").read_text())["grid"]
    assert report["exact"] >= 0.8 and report["tile_recall"] >= 0.9, {k: report[k] for k in report if k != "answers"}
    assert len(report["answers"][0]["per_tile"]) == 6 and "prompt_share" in report["answers"][0]["per_tile"][0]
    picture = grid / "grid0.png"
    with running_app(ws.root) as url:
        sent = requests.post(f"{url}/api/v1/recognize", timeout=30, json={
            "image": base64.b64encode(picture.read_bytes()).decode(), "prompt": prompts["grid0"]})
        unknown = requests.post(f"{url}/api/v1/recognize", timeout=30, json={
            "image": base64.b64encode(picture.read_bytes()).decode(), "prompt": "zebra"})
        bare = requests.post(f"{url}/api/v1/recognize", timeout=30, json={
            "image": base64.b64encode(picture.read_bytes()).decode()}).json()
    assert sent.status_code == 200, sent.text
    answer = sent.json()
    assert answer["tiles"] == answers["grid0"] and answer["result"] == " ".join(map(str, answers["grid0"]))
    assert [(c["x"], c["y"]) for c in answer["clicks"]] == [(20 + 36 * (i % 3), 56 + 36 * (i // 3))
                                                             for i in answers["grid0"]]
    assert len(answer["boxes"]) == 6 and answer["prompt"] == prompts["grid0"] and answer["prompt_confidence"] == 1
    assert unknown.status_code == 422 and "target_not_found" in unknown.text, unknown.text
    assert bare["tiles"] is None and len(bare["result"].split(",")) == 6  # no prompt: each tile's class
    local = Recognizer(ws.root).recognize(picture, prompt=prompts["grid0"])
    assert local["tiles"] == answer["tiles"] and local["clicks"] == answer["clicks"]
    # the prompt read from the captcha: here by the tile classifier itself, from the example picture
    # (prompts.txt now only checks the readings)
    with (ws.root / "settings.py").open("a") as f:
        f.write("PROMPT_MODEL = 'works/grid'\n")
    assert run_script(ws.root, "test.py").returncode == 0
    read = json.loads((ws.root / "reports" / "test_report.json").read_text())["grid"]
    assert read["prompts"] == "read by PROMPT_MODEL" and read["exact"] >= 0.8, read["exact"]
    assert read["prompts_read_right"] >= 0.9 and read["answers"][0]["prompt_right"] is not None
    unprompted = Recognizer(ws.root).recognize(picture)
    assert (unprompted["prompt"], unprompted["tiles"]) == (prompts["grid0"], answers["grid0"]), unprompted


def test_a_grid_that_names_no_tiles_or_no_prompt_box_is_refused_at_load(tmp_path: Path) -> None:
    ws = create_workspace(tmp_path / "works", "grid", "GRID")
    with (ws.root / "settings.py").open("a") as f:
        f.write("GRID = (2, 4)\n")
    with pytest.raises(SettingsError, match=r"GRID must be \(rows, columns, left, top"):
        load_settings(ws.root)
    with (ws.root / "settings.py").open("a") as f:  # a later line wins: a grid again, but no prompt box to read
        f.write("GRID = (2, 4, 5, 41, 67, 67, 72, 72)\nGRID_PROMPT = ()\nPROMPT_MODEL = 'ddddocr'\n")
    with pytest.raises(SettingsError, match=r"PROMPT_MODEL reads the prompt from GRID_PROMPT"):
        load_settings(ws.root)


def test_a_misread_prompt_is_taken_for_the_likeliest_class_it_names() -> None:
    from capforge.data.charset import Charset
    from capforge.modes import make_mode

    settings = load_settings(None, ["MODE=GRID"])
    mode = make_mode("GRID", Charset(["护腕", "珊瑚", "龙舟", "电线"], None), settings, 1)
    assert mode.known_class("护肠") == ("护腕", 0.5) and mode.known_class("龙开")[0] == "龙舟"
    assert mode.known_class("电线") == ("电线", 1.0)
    assert mode.known_class("请点击") == ("请点击", 0.0)  # nothing like a class: not taken for one
