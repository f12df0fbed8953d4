"""Input pipeline cost: training images per second from packed TFRecords against the same
model fed from in-memory tensors, in one run. Target: the pipeline costs under 10 %.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe  # noqa: E402

from capforge.cli import invoke  # noqa: E402
from capforge.data.generate import CaptchaSpec, generate  # noqa: E402
from capforge.settings import load_settings  # noqa: E402
from capforge.workspace import create_workspace  # noqa: E402


def images_per_second(model, dataset, steps: int, batch: int) -> float:
    iterator = iter(dataset.repeat())
    for _ in range(3):  # warm up: tracing and the first shuffle buffer
        model.train_on_batch(*next(iterator))
    started = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(*next(iterator))
    return steps * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--mode", default="CTC")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {describe()}")
    ws = create_workspace(Path(tempfile.mkdtemp(prefix="capforge-pipe-")), "pipe", args.mode)
    generate(CaptchaSpec("0123456789abcdefghijklmnopqrstuvwxyz", 4, 4), ws.split_dir("train"), args.images,
             seed=1, progress=False)
    generate(CaptchaSpec("0123456789abcdefghijklmnopqrstuvwxyz", 4, 4), ws.split_dir("validation"), 200,
             seed=2, progress=False)
    assert invoke("pack", ws.root, []) == 0

    import keras
    import tensorflow as tf

    from capforge.data.records import load_arrays, make_dataset
    from capforge.train import build_model, prepare

    settings = load_settings(ws.root)
    setup = prepare(ws, settings)
    mode, batch = setup.mode, settings.BATCH_SIZE
    model = build_model(ws, settings, mode)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=mode.loss())
    # the pipeline as training runs it: shuffled, and augmented when DATA_ENHANCEMENT is on (default)
    from_records = make_dataset(ws, setup.manifest, "train", mode, batch, training=True,
                                augment=settings.DATA_ENHANCEMENT)
    images, labels, _ = load_arrays(ws, setup.manifest, "train", mode)
    ids = [mode.charset.encode(mode.tokens(t)) + [0] * (mode.label_width - len(t)) for t in labels]
    in_memory = tf.data.Dataset.from_tensor_slices(
        (tf.constant(images, tf.float32) / 255.0, tf.constant(ids, tf.int32))).batch(batch).cache()
    rates: dict[str, list[float]] = {"in-memory tensors": [], "TFRecord pipeline": []}
    for round_number in range(args.rounds):  # alternate, so drifts in machine speed hit both alike
        for name, dataset in (("in-memory tensors", in_memory), ("TFRecord pipeline", from_records)):
            rates[name].append(images_per_second(model, dataset, args.steps, batch))
            print(f"round {round_number + 1}: {name:<20} {rates[name][-1]:8.1f} images/s")
    memory, records = (statistics.median(rates[k]) for k in ("in-memory tensors", "TFRecord pipeline"))
    print(f"medians: in-memory {memory:.1f}, TFRecord {records:.1f} images/s; pipeline cost "
          f"{100 * (1 - records / memory):.1f} % (target under 10 %), batch {batch}, "
          f"{settings.IMAGE_HEIGHT}x{settings.IMAGE_WIDTH}, augmentation "
          f"{'on' if settings.DATA_ENHANCEMENT else 'off'}")


if __name__ == "__main__":
    main()
