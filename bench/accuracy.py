"""Accuracy against wall time on this machine's CPU, plus ONNX inference speed.

captcha-package images, 4 characters from 0-9a-z (NUM_CLASSES: one character, 36 whole-image
classes), 160x60; N training and M test images; the mode's default settings. Prints test
sequence accuracy after 5 and 10 minutes of training (the 5-minute figure from the weights of
the last epoch end by then, the 10-minute one through the exported ONNX model), inference
milliseconds per image at batch 1 and 64, and optionally ddddocr's.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe  # noqa: E402

from capforge.cli import invoke  # noqa: E402
from capforge.data.generate import CaptchaSpec, generate  # noqa: E402
from capforge.settings import load_settings  # noqa: E402
from capforge.workspace import create_workspace  # noqa: E402

CHARSET = "0123456789abcdefghijklmnopqrstuvwxyz"


def inference_ms(predictor, images: list[Path], batch: int, repeats: int = 3) -> float:
    """Median milliseconds per image for the model call alone (inputs preprocessed once)."""
    inputs = predictor.inputs(images[: max(batch, 64)])
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, len(inputs), batch):
            predictor.probabilities(inputs[start:start + batch])
        timings.append((time.perf_counter() - started) * 1000 / len(inputs))
    return float(np.median(timings))


def ddddocr_figures(images: list[Path]) -> tuple[float, float]:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "ddddocr"], check=True)
    import ddddocr

    ocr = ddddocr.DdddOcr(show_ad=False)
    correct = 0
    started = time.perf_counter()
    for path in images:
        correct += ocr.classification(path.read_bytes()).lower() == path.name.split("_")[0]
    return correct / len(images), (time.perf_counter() - started) * 1000 / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="CTC", choices=("CTC", "CTC_TINY", "ORDINARY", "NUM_CLASSES"))
    parser.add_argument("--train", type=int, default=20000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--minutes", type=float, nargs=2, default=(5.0, 10.0))
    parser.add_argument("--work", type=Path, help="keep the workspace here (default: a temp folder)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--ddddocr", action="store_true", help="also run ddddocr's bundled model")
    args = parser.parse_args()
    print(f"machine: {describe()}")
    works = args.work or Path(tempfile.mkdtemp(prefix="capforge-bench-"))
    ws = create_workspace(works, f"bench_{args.mode.lower()}", args.mode, force=True)
    length = 1 if args.mode == "NUM_CLASSES" else 4  # a class per text: one character's 36
    with (ws.root / "settings.py").open("a") as f:
        f.write(f"CHARSET = {CHARSET!r}\nCAPTCHA_LENGTH = {length}\nEPOCHS = 1000\n")
    spec = CaptchaSpec(CHARSET, length, length, 160, 60)
    if not any(ws.split_dir("train").iterdir()):
        validation = max(500, args.test // 2)
        generate(spec, ws.split_dir("train"), args.train, seed=101)
        generate(spec, ws.split_dir("validation"), validation, seed=202)
        generate(spec, ws.split_dir("test"), args.test, seed=303)
    settings = load_settings(ws.root, args.overrides)
    print(f"settings: MODE={settings.MODE} {settings.IMAGE_HEIGHT}x{settings.IMAGE_WIDTH} "
          f"BACKBONE={settings.BACKBONE} BATCH_SIZE={settings.BATCH_SIZE} LR={settings.LR}")
    assert invoke("pack", ws.root, [f"--set={o}" for o in args.overrides]) == 0

    import keras

    from capforge.data.records import load_arrays
    from capforge.pack import read_manifest
    from capforge.evaluate import evaluate
    from capforge.serve.predictor import Predictor
    from capforge.train import load_checkpoint, prepare, train

    mode = prepare(ws, settings).mode
    test_images, test_labels, _ = load_arrays(ws, read_manifest(ws), "test", mode)
    first, total = args.minutes
    snapshot: dict[str, Any] = {}

    class AtMinutes(keras.callbacks.Callback):
        """The weights at the last epoch end within the first budget (averaged, as validation and
        checkpoints see them with WEIGHT_AVERAGE)."""

        def on_train_begin(self, logs=None):
            self.started = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            if time.monotonic() - self.started <= 60 * first:
                snapshot["weights"] = self.model.get_weights()
                snapshot["minutes"] = (time.monotonic() - self.started) / 60

    summary = train(ws, settings, minutes=total, continue_from_best=True, verbose=2,
                    extra_callbacks=[AtMinutes()])
    if "weights" in snapshot:
        model = load_checkpoint(ws.checkpoints / "best.keras")
        model.set_weights(snapshot["weights"])
        snapshot["acc"] = mode.validation_score(lambda b: np.asarray(model.predict_on_batch(b)), test_images,
                                                test_labels)
    assert invoke("export", ws.root, [f"--set={o}" for o in args.overrides]) == 0
    report = evaluate(ws, settings, "test", progress=False)
    predictor = Predictor(ws.exports / "current")
    paths = sorted(ws.split_dir("test").iterdir())
    print(f"training: {summary['epochs_run']} epochs in {summary['seconds'] / 60:.1f} min on "
          f"{args.train} images")
    if "acc" in snapshot:
        print(f"test sequence accuracy at {snapshot['minutes']:.1f} min: {snapshot['acc']:.4f} "
              f"({len(test_labels)} images, the weights of the last epoch end by {first:g} min)")
    else:
        print(f"no epoch ended within {first:g} min")
    print(f"test sequence accuracy at {total:g} min (best checkpoint, exported ONNX): "
          f"{report['sequence_accuracy']:.4f} ({report['images']} images); CER {report['cer']:.4f}")
    print(f"onnxruntime inference: {inference_ms(predictor, paths, 1):.2f} ms/image at batch 1, "
          f"{inference_ms(predictor, paths, 64):.3f} ms/image at batch 64")
    if args.ddddocr:
        accuracy, ms = ddddocr_figures(paths)
        print(f"ddddocr (bundled general model, no training): accuracy {accuracy:.4f}, {ms:.2f} ms/image")
    print(f"workspace: {ws.root}")


if __name__ == "__main__":
    main()
