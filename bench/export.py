"""The CTC model's ONNX export with native GRU nodes against Keras' own export (a Loop per time
step): single-image and batch-32 time in onnxruntime, one thread, on the same weights.

The default CTC model of a workspace with the default settings and 36 symbols; its weights are
untrained, which changes nothing about speed. Both exports' answers are compared first.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe  # noqa: E402

from capforge.data.charset import Charset  # noqa: E402
from capforge.modes import make_mode  # noqa: E402
from capforge.onnx_export import export_onnx  # noqa: E402
from capforge.settings import load_settings  # noqa: E402
from capforge.train import build_model  # noqa: E402


def median_ms(session: object, batch: np.ndarray, repeats: int) -> float:
    """Median wall time of one ``session.run`` on ``batch``, in milliseconds."""
    name = session.get_inputs()[0].name
    session.run(None, {name: batch})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {name: batch})
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    import onnxruntime as ort

    settings = load_settings(None, ["MODE='CTC'"])
    mode = make_mode("CTC", Charset("0123456789abcdefghijklmnopqrstuvwxyz"), settings, 6)
    model = build_model(None, settings, mode)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    rng = np.random.default_rng(0)
    shape = tuple(model.inputs[0].shape[1:])
    one, many = (rng.random((n, *shape), dtype=np.float32) for n in (1, 32))
    rows, answers = [], {}
    with tempfile.TemporaryDirectory() as scratch:
        for kind in ("native", "keras"):
            path = Path(scratch) / f"{kind}.onnx"
            if kind == "native":
                export_onnx(model, path)
            else:
                model.export(str(path), format="onnx", verbose=False)
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            answers[kind] = session.run(None, {session.get_inputs()[0].name: many})[0]
            rows.append((kind, median_ms(session, one, args.repeats), median_ms(session, many, args.repeats // 10)))
    gap = float(np.abs(answers["native"] - answers["keras"]).max())
    print(f"# `.venv/bin/python bench/export.py`, {datetime.date.today()}, {describe()}")
    print(f"input {shape}, largest difference between the two exports' outputs: {gap:.2e}\n")
    print("| export | 1 image, median ms | 32 images, median ms |\n| --- | --- | --- |")
    for kind, single, batch in rows:
        print(f"| {kind} | {single:.3f} | {batch:.2f} |")
    print(f"\nnative is {rows[1][1] / rows[0][1]:.1f}x faster for one image, "
          f"{rows[1][2] / rows[0][2]:.1f}x for 32")


if __name__ == "__main__":
    main()
