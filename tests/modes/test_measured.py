"""Modes whose answers are measured, not read (SLIDER: a gap's x; ROTATE: an angle), end to end as a
user runs them: scaffold, generate from pictures, check, split, pack, train, export, test, serve
(HTTP, Recognizer, the page's answer) and the example crawler against the demo route. Each must
beat the best constant guess on its test split."""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import io
import json
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from capforge.modes import MODE_CLASSES
from capforge.recognizer import Recognizer
from capforge.serve.api import create_app
from capforge.serve.registry import ModelRegistry
from capforge.serve.ui import build_ui
from conftest import CHROMIUM, answers_on_the_page, new_work, run_script, running_app

MEASURED = [name for name, cls in MODE_CLASSES.items() if cls.measure]
# Small inputs so that a minute of training on two cores learns; generated sizes as the defaults.
SIZES = {"SLIDER": "IMAGE_HEIGHT = 64\nIMAGE_WIDTH = 160\n", "ROTATE": "IMAGE_HEIGHT = 48\nIMAGE_WIDTH = 48\n"}
OUT_OF_RANGE = {"SLIDER": ("9999_1_bad.png", "0 to 279"), "ROTATE": ("400_bad.png", "from 0 to 360")}


def constant_guess_error(mode: str, truths: list[float]) -> float:
    """The mean error of the best single answer for every image (what a model that learnt nothing gets)."""
    if mode == "ROTATE":
        return min(np.mean([min(abs(g - t) % 360, 360 - abs(g - t) % 360) for t in truths]) for g in range(360))
    return float(np.mean(np.abs(np.array(truths) - np.median(truths))))


@contextlib.contextmanager
def static_site(folder: Path) -> Iterator[str]:
    """``folder``'s files over HTTP on a free loopback port (a site's captcha and piece); yields its URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("mode", MEASURED)
def test_scaffold_to_served_answer(tmp_path: Path, mode: str) -> None:
    assert new_work(tmp_path / "works", "site", "--mode", mode).returncode == 0
    root = tmp_path / "works" / "site"
    with (root / "settings.py").open("a") as f:
        f.write(SIZES[mode])
    for script, *args in (("gen_sample_by_captcha.py", "--count", "600", "--seed", "5"), ("check_file.py",),
                          ("split_dataset.py",), ("pack_dataset.py",), ("train.py", "--minutes", "1"),
                          ("save_model.py",), ("test.py",)):
        result = run_script(root, script, *args)
        assert result.returncode == 0, f"{script}: {result.stdout[-1500:]} {result.stderr[-1500:]}"
    report = json.loads((root / "reports" / "test_report.json").read_text())
    unit, tolerances = MODE_CLASSES[mode].measure
    assert report["mode"] == mode and report["unit"] == unit and report["images"] == 60
    assert set(report["within"]) == {f"{t:g}" for t in tolerances}
    assert (root / "reports" / "test_worst.png").read_bytes()[:4] == b"\x89PNG"
    truths = [float(p.name.split("_")[0]) for p in (root / "data" / "test").iterdir()]
    guess = constant_guess_error(mode, truths)
    assert report["mean_error"] < 0.6 * guess, (report["mean_error"], guess)  # it learnt where, not a constant

    # served: Recognizer, the HTTP API (with the inputs beside the image) and the page agree
    sample = sorted((root / "data" / "test").iterdir())[0]
    answer = Recognizer(root).recognize(sample)
    field = "x" if mode == "SLIDER" else "angle"
    places = 0 if mode == "SLIDER" else 1  # the result is the field rounded (from the unrounded value)
    assert isinstance(answer[field], float) and len(answer["result"].partition(".")[2]) == places
    assert abs(float(answer["result"]) - answer[field]) <= 0.5 * 10 ** -places + 0.01
    assert all(set(c) == {field, "probability"} for c in answer["candidates"])
    api = TestClient(create_app(ModelRegistry(root.parent, None)))
    served = api.post("/api/v1/recognize", json={"image": b64(sample.read_bytes())}).json()
    assert served[field] == answer[field]
    documented = api.get("/openapi.json").json()["components"]["schemas"]
    assert field in documented["RecognizeAnswer"]["properties"]
    piece = Image.new("RGBA", (24, 24), (200, 30, 30, 255))
    if mode == "SLIDER":  # with the piece, the matcher's gap is the answer and the model's x stays beside it
        import random

        from capforge.data.pictures import scene
        from capforge.modes.slider import render_slider

        rng = random.Random(3)
        background, cut, x, y = render_slider(scene(320, rng), 280, 160, rng)
        both = api.post("/api/v1/recognize", json={"image": b64(png(background)), "piece": b64(png(cut)),
                                                   "display_width": 140}).json()
        assert abs(both["x"] - x) <= 3 and abs(both["y"] - y) <= 3 and both["result"] == f"{both['x']:.0f}", both
        assert both["display_x"] == round(both["x"] / 2, 1) and set(both["match"]) >= {"x", "y", "width", "score"}
        alone = api.post("/api/v1/recognize", json={"image": b64(png(background))}).json()
        assert both["model_x"] == alone["x"] and both["width"] == cut.getbbox()[2] - cut.getbbox()[0]
        for wrong, code in (({"piece": b64(b"not a picture")}, "invalid_image"), ({"display_width": -3}, "invalid_input")):
            refused = api.post("/api/v1/recognize", json={"image": b64(sample.read_bytes()), **wrong})
            assert refused.status_code == 400 and refused.json()["error"]["code"] == code, refused.text
    else:  # one image too many: ROTATE reads the picture alone
        refused = api.post("/api/v1/recognize", json={"image": b64(sample.read_bytes()), "piece": b64(png(piece))})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "input_not_supported"
        assert "'piece' is not read by ROTATE" in refused.json()["error"]["message"]
    page = build_ui(ModelRegistry(root.parent, None))
    handler = next(f.fn for f in page.fns.values() if getattr(f.fn, "__name__", "") == "answer")
    text, _, _, marks, whole = handler("site", Image.open(sample), *([None] * len(MODE_CLASSES[mode].inputs)))
    assert text == answer["result"] and whole[field] == answer[field]
    assert (marks is not None) == (mode == "SLIDER")  # the gap is drawn on the picture

    with running_app(root, "--demo-captcha") as url:
        if CHROMIUM is not None:  # ./run test installs it; without it test_serve_live skips its pages too
            # a person on the page, its inputs beside the image left empty, gets the API's answer
            shown, info = answers_on_the_page(url, [sample], [answer["result"]])
            assert shown == [answer["result"]], info
        # the example crawler turns answers into what a site wants, against the demo route
        crawled = run_script(root, "spider_example.py", "--url", url, "--count", "2")
        if mode == "SLIDER":  # a site that serves the piece too: the drag moves the piece's image onto the gap
            (tmp_path / "site").mkdir()
            (tmp_path / "site" / "bg.png").write_bytes(png(background))
            (tmp_path / "site" / "piece.png").write_bytes(png(cut))
            with static_site(tmp_path / "site") as site:
                dragged = run_script(root, "spider_example.py", "--url", url, "--count", "1", "--captcha-url",
                                     f"{site}/bg.png", "--piece-url", f"{site}/piece.png")
            assert dragged.returncode == 0, dragged.stderr
            drag = float(dragged.stdout.split("solved: drag ")[1].split(" px")[0])
            assert abs(drag - (x - cut.getbbox()[0])) <= 3, (x, cut.getbbox(), dragged.stdout)
    assert crawled.returncode == 0, crawled.stderr
    assert crawled.stdout.count("solved: drag " if mode == "SLIDER" else "solved: turn ") == 2, crawled.stdout
    if mode == "SLIDER":  # the demo route serves each background's piece (X-Captcha-Piece); the matcher misses
        # a few of its random drawn backgrounds (bench/results/measured.md): one miss is allowed
        assert crawled.stdout.count("  correct") >= crawled.stdout.count("attempt ") - 1 >= 1, crawled.stdout

    # a label outside what the image allows is named, with the allowed range
    name, allowed = OUT_OF_RANGE[mode]
    Image.open(sample).save(root / "data" / "pool" / name)
    checked = run_script(root, "check_file.py")
    assert checked.returncode == 1 and name in checked.stdout and allowed in checked.stdout, checked.stdout


def test_matcher_finds_the_gap_in_every_style() -> None:
    """The training-free matcher puts the piece back where it was cut (within 3 px) on drawn
    backgrounds, in every gap style, with decoys and the piece waiting at the start."""
    import random

    from capforge.data.pictures import scene
    from capforge.modes import slider

    errors = {style: [] for style in slider.STYLES}
    for i in range(40):
        style = slider.STYLES[i % len(slider.STYLES)]
        rng = random.Random(i)
        background, piece, x, _ = slider.render_slider(scene(320, rng), 280, 160, rng, style)
        errors[style].append(abs(slider.match_piece(background, piece)["x"] - x))
    for style, found in errors.items():
        assert sum(e <= 3 for e in found) >= len(found) - 1, (style, found)


def test_matcher_follows_the_outline_of_a_piece_cut_from_a_flat_sky() -> None:
    """A piece cut from a smooth gradient correlates as well with every place on the same rows:
    the outline must decide, not the picture."""
    import random

    from capforge.modes import slider

    sky = np.linspace(180, 188, 160, dtype=np.float32)[:, None].repeat(280, axis=1)
    picture = Image.fromarray(np.dstack([sky * 0.6, sky * 0.8, sky]).astype(np.uint8))
    for seed in range(10):  # every style, decoys, the piece waiting at the start
        background, piece, x, y = slider.render_slider(picture, 280, 160, random.Random(seed))
        found = slider.match_piece(background, piece)
        assert abs(found["x"] - x) <= 3 and abs(found["y"] - y) <= 3, (seed, x, y, found)
