"""Click-captcha detection against wall time on this machine's CPU.

2,000 synthetic click captchas (320x160, 3-5 targets from 0-9a-z each): 1,600 train, 400
test (and 200 validation, which training needs for its checkpoints). EFFICIENTDET defaults
(PHI 0, 128x256 input). Prints test mAP@0.5 and mAP@0.5:0.95 after --minutes of training,
through the exported ONNX model, onnxruntime milliseconds per image, and the share of test
images where every prompted click (the targets in order) lands inside its target's box.
"""

from __future__ import annotations

import argparse
import base64
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe  # noqa: E402

from capforge.cli import invoke  # noqa: E402
from capforge.modes.efficientdet.boxes import read_voc  # noqa: E402
from capforge.modes.efficientdet.clicks import ClickSpec  # noqa: E402
from capforge.data.generate import generate  # noqa: E402
from capforge.settings import load_settings  # noqa: E402
from capforge.workspace import create_workspace  # noqa: E402

CHARSET = "0123456789abcdefghijklmnopqrstuvwxyz"


def click_hits(works: Path, name: str, images: list[Path]) -> float:
    """Share of images whose prompted clicks (the true targets, in order) all land in their boxes."""
    from fastapi.testclient import TestClient

    from capforge.serve.api import ServeOptions, create_app
    from capforge.serve.registry import ModelRegistry

    api = TestClient(create_app(ModelRegistry(works, [name]), ServeOptions()))
    hits = 0
    for path in images:
        boxes = read_voc(path.with_suffix(".xml"))[0]
        body = {"image": base64.b64encode(path.read_bytes()).decode(), "prompt": [b.label for b in boxes]}
        answer = api.post("/api/v1/recognize", json=body)
        if answer.status_code != 200:
            continue
        clicks = answer.json()["clicks"]
        hits += all(b.x1 <= c["x"] <= b.x2 and b.y1 <= c["y"] <= b.y2 for b, c in zip(boxes, clicks))
    return hits / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1600)
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--work", type=Path, help="keep the workspace here (default: a temp folder)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    print(f"machine: {describe()}")
    works = args.work or Path(tempfile.mkdtemp(prefix="capforge-bench-"))
    ws = create_workspace(works, "bench_clicks", "EFFICIENTDET", force=True)
    with (ws.root / "settings.py").open("a") as f:
        f.write(f"CHARSET = {CHARSET!r}\nEPOCHS = 1000\n")
    spec = ClickSpec(CHARSET, 3, 5)
    if not any(ws.split_dir("train").iterdir()):
        generate(spec, ws.split_dir("train"), args.train, seed=11)
        generate(spec, ws.split_dir("validation"), 200, seed=22)
        generate(spec, ws.split_dir("test"), args.test, seed=33)
    settings = load_settings(ws.root, args.overrides)
    print(f"settings: PHI={settings.PHI} {settings.IMAGE_HEIGHT}x{settings.IMAGE_WIDTH} "
          f"BATCH_SIZE={settings.BATCH_SIZE} LR={settings.LR} DATA_ENHANCEMENT={settings.DATA_ENHANCEMENT}")
    overrides = [arg for item in args.overrides for arg in ("--set", item)]
    assert invoke("pack", ws.root, overrides) == 0
    started = time.monotonic()
    assert invoke("train", ws.root, ["--minutes", str(args.minutes), *overrides]) == 0
    print(f"training wall time: {(time.monotonic() - started) / 60:.1f} min (budget {args.minutes})")
    assert invoke("export", ws.root, overrides) == 0
    assert invoke("test", ws.root, overrides) == 0
    from capforge.evaluate import evaluate
    from capforge.serve.predictor import Predictor

    report = evaluate(ws, settings, progress=False)
    predictor = Predictor(ws.exports / "current")
    tests = sorted(ws.split_dir("test").glob("*.png"))
    batch = predictor.inputs(tests[:64])
    timings = []
    for _ in range(3):
        t = time.perf_counter()
        for row in batch:
            predictor.probabilities(row[None])
        timings.append((time.perf_counter() - t) * 1000 / len(batch))
    print(f"RESULT test mAP@0.5 {report['map50']:.4f}  mAP@0.5:0.95 {report['map50_95']:.4f}  "
          f"precision {report['precision']:.4f} recall {report['recall']:.4f} ({report['images']} images)")
    print(f"RESULT onnxruntime {np.median(timings):.2f} ms per image (batch 1, model call only); "
          f"{report['ms_per_image']:.2f} ms with preprocessing and decoding")
    print(f"RESULT prompted clicks all inside their boxes: {click_hits(works, ws.name, tests):.4f}")


if __name__ == "__main__":
    main()
