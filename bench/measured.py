"""SLIDER and ROTATE on pictures they never trained on, through the user's flow.

For each mode it splits a folder of pictures (default ../shared/datasets/photos, 3,000 upright
scene photos) by file into training pictures (a site's backgrounds: SLIDER uses --backgrounds of
them, as sites reuse a few dozen; ROTATE uses every training picture) and held-out pictures
(every fifth file, never seen in training). It runs the workspace scripts as the README gives
them: New_work.py, gen_sample_by_captcha.py --source <training pictures>, check_file.py, split,
pack, train.py --minutes N, save_model.py. Then it answers --test captchas cut from the held-out
pictures through capforge.Recognizer (the served ONNX model), and prints, beside it:

- SLIDER: the training-free matcher (OpenCV edges of the piece) on the same captchas, and on the
  real slider captchas of ../shared/datasets/slider_toutiao (unlabelled: how often the trained
  model and the matcher agree within 5 px there);
- ROTATE: a constant guess (the best single angle).

MATCHER (no training): the matcher alone on --test captchas cut from drawn scenes (the demo
route's, flat colours) and from the held-out photos, per gap style, and its time per captcha.

Figures go to bench/results/measured.md with the command, date and machine.

    .venv/bin/python bench/measured.py --modes SLIDER ROTATE --minutes 10
    .venv/bin/python bench/measured.py --modes MATCHER --test 1000
"""

from __future__ import annotations

import argparse
import datetime
import io
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from machine import describe  # noqa: E402

from capforge import Recognizer  # noqa: E402
from capforge.data.images import iter_images, open_image  # noqa: E402
from capforge.modes.rotate import RotateSpec, angle_error, turned  # noqa: E402
from capforge.modes.slider import STYLES, match_piece, render_slider  # noqa: E402

SHARED = ROOT.parent / "shared" / "datasets"
RESULTS = HERE / "results" / "measured.md"


def run(root: Path, script: str, *args: str) -> str:
    """Run a workspace script as a user would; stop the bench on failure."""
    done = subprocess.run([sys.executable, script, *args], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def split_pictures(folder: Path, work: Path, backgrounds: int | None) -> tuple[Path, list[Path]]:
    """Training pictures (linked into a folder) and the held-out ones (every fifth file)."""
    pictures = sorted(iter_images(folder))
    held = pictures[::5]
    train = [p for i, p in enumerate(pictures) if i % 5]
    if backgrounds:
        train = random.Random(0).sample(train, backgrounds)
    target = work / "pictures"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for i, path in enumerate(train):
        (target / f"{i:05d}{path.suffix}").symlink_to(path)
    return target, held


def workspace(work: Path, mode: str, source: Path, count: int, minutes: float, extra: list[str],
              reuse: bool = False) -> tuple[Path, str]:
    """Scaffold, generate from ``source``, check (and --fix: generated pictures may repeat), split,
    pack, train and export; the train log's last line. ``reuse``: a workspace exported before is
    answered again as it is."""
    root, note = work / "works" / "site", work / "trained.txt"
    if reuse and (root / "exports" / "current").is_dir() and note.is_file():
        return root, note.read_text().strip() + " (exported by an earlier run, reused)"
    shutil.rmtree(work / "works", ignore_errors=True)
    subprocess.run([sys.executable, str(ROOT / "New_work.py"), "works", "site", "--mode", mode], cwd=work,
                   check=True, capture_output=True)
    with (root / "settings.py").open("a") as f:
        f.write("".join(line + "\n" for line in extra))
    run(root, "gen_sample_by_captcha.py", "--count", str(count), "--seed", "1", "--source", str(source))
    run(root, "check_file.py", "--fix")
    run(root, "split_dataset.py")
    run(root, "pack_dataset.py")
    trained = run(root, "train.py", "--minutes", str(minutes)).strip().splitlines()[-1]
    run(root, "save_model.py")
    note.write_text(trained)
    return root, trained


def http_latency(root: Path, images: list[bytes], extra: dict | None = None) -> float:
    """Median milliseconds of one POST /api/v1/recognize to the workspace's app.py (uvicorn, one
    worker, loopback), over ``images`` sent one after another, each a different image (a repeat
    would be answered from the server's cache)."""
    import base64
    import socket

    import requests

    if len(set(images)) < len(images):
        raise SystemExit(f"http_latency: {len(images) - len(set(images))} of the {len(images)} images repeat")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--workers", "1"], cwd=root,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        times = []
        with requests.Session() as session:
            for data in images:
                started = time.perf_counter()
                reply = session.post(f"{url}/api/v1/recognize", timeout=10,
                                     json={"image": base64.b64encode(data).decode(), **(extra or {})})
                times.append(time.perf_counter() - started)
                reply.raise_for_status()
        return 1000 * float(np.median(times[10:]))
    finally:
        server.terminate()
        server.wait(timeout=20)


def stages(root: Path, images: list[bytes]) -> tuple[float, float, float]:
    """In one process, median milliseconds per image of what a request does before its answer:
    decoding and preprocessing, then the model (onnxruntime, one image); and the images' median
    size in KB (what the request carries, base64 adds a third)."""
    from capforge.serve.predictor import Predictor

    predictor = Predictor(root / "exports" / "current", threads=1)
    pre, model = [], []
    for data in images:
        started = time.perf_counter()
        array, _ = predictor.placed(data)
        middle = time.perf_counter()
        predictor.probabilities(array[None])
        pre.append(middle - started)
        model.append(time.perf_counter() - middle)
    return 1000 * float(np.median(pre[10:])), 1000 * float(np.median(model[10:])), float(np.median([len(d) for d in images])) / 1024


def as_jpeg(data: bytes) -> bytes:
    """An image's bytes again as JPEG (quality 90)."""
    buffer = io.BytesIO()
    open_image(data).convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def text_reference(work: Path) -> tuple[Path, list[bytes]]:
    """A CTC workspace trained a minute on generated text captchas: the per-request cost to match,
    and 200 of its captchas, all different (the server caches answers by content: a repeated
    image would time the cache, not the model)."""
    shutil.rmtree(work / "works", ignore_errors=True)
    subprocess.run([sys.executable, str(ROOT / "New_work.py"), "works", "site", "--mode", "CTC"], cwd=work,
                   check=True, capture_output=True)
    root = work / "works" / "site"
    for script, *args in (("gen_sample_by_captcha.py", "--count", "1000", "--seed", "1"), ("split_dataset.py",),
                          ("pack_dataset.py",), ("train.py", "--minutes", "1"), ("save_model.py",)):
        run(root, script, *args)
    return root, [p.read_bytes() for p in sorted((root / "data").glob("*/*.png"))[:200]]


def answered(recognizer: Recognizer, image: Any, sent: list[bytes], times: list[float]) -> dict:
    """``recognizer``'s answer to ``image`` sent as PNG bytes; the bytes and the seconds kept."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    sent.append(buffer.getvalue())
    started = time.perf_counter()
    answer = recognizer.recognize(sent[-1])
    times.append(time.perf_counter() - started)
    return answer


def row(name: str, errors: list[float], within: tuple[float, ...]) -> str:
    """One table row: how many, mean and median error, and the share within each tolerance."""
    e = np.asarray(errors)
    return (f"| {name} | {len(e)} | {np.mean(np.minimum(e, 1000)):.2f} | {np.median(e):.2f} | "
            + " | ".join(f"{(e <= t).mean():.3f}" for t in within) + " |")


def bench_matcher(args: argparse.Namespace, work: Path) -> tuple[list[str], None, list[bytes]]:
    """The matcher alone: drawn scenes and held-out photos, every style in turn, the sizes sites use."""
    from capforge.data.pictures import scene

    _, held = split_pictures(args.pictures, work, args.backgrounds)
    lines = ["### The matcher alone (SLIDER with the piece; no training)", "",
             "| backgrounds | captchas | mean px | median px | within 2 | within 3 | within 5 | "
             + " | ".join(f"{style} within 3" for style in STYLES) + " | ms per captcha |",
             "| --- " * (8 + len(STYLES)) + "|"]
    for kind in ("drawn scenes (the demo route's)", "held-out photos"):
        rng = random.Random(11)
        errors, took = [], 0.0
        for i in range(args.test):
            width, height = rng.choice(((280, 160), (268, 150), (320, 160), (340, 212), (300, 170)))
            picture = scene(2 * max(width, height), rng) if kind.startswith("drawn") else open_image(
                held[i % len(held)]).convert("RGB")
            background, piece, x, _ = render_slider(picture, width, height, rng, STYLES[i % len(STYLES)])
            started = time.perf_counter()
            match = match_piece(background, piece)
            took += time.perf_counter() - started
            errors.append(abs(match["x"] - x) if match else float("inf"))
        styled = [f"{(np.asarray(errors[k::len(STYLES)]) <= 3).mean():.3f}" for k in range(len(STYLES))]
        lines.append(row(kind, errors, (2, 3, 5))[:-2] + " | " + " | ".join(styled)
                     + f" | {1000 * took / len(errors):.1f} |")
    return lines + [""], None, []


def bench_slider(args: argparse.Namespace, work: Path) -> tuple[list[str], Path, list[bytes]]:
    source, held = split_pictures(args.pictures, work, args.backgrounds)
    root, trained = workspace(work, "SLIDER", source, args.count, args.minutes, args.setting, args.reuse)
    recognizer = Recognizer(root)
    rng = random.Random(11)
    model_errors, served_errors, times, sent = [], [], [], []
    styles: dict[str, list[float]] = {style: [] for style in STYLES}
    for i in range(args.test):
        width, height = rng.choice(((280, 160), (268, 150), (320, 160), (340, 212), (300, 170)))
        style = STYLES[i % len(STYLES)]
        background, piece, x, _ = render_slider(open_image(held[i % len(held)]).convert("RGB"), width, height, rng,
                                                style)
        answer = answered(recognizer, background, sent, times)
        model_errors.append(abs(answer["x"] - x))
        styles[style].append(model_errors[-1])
        served_errors.append(abs(recognizer.recognize(background, piece=piece)["x"] - x))
    apart, real = [], sorted((SHARED / "slider_toutiao" / "images").glob("*_1.png"))
    for path in real:
        answer = recognizer.recognize(path.read_bytes())
        match = match_piece(open_image(path), open_image(path.with_name(path.name.replace("_1.", "_2."))))
        apart.append(answer["x"] - match["x"] if match else float("inf"))
    gaps = np.abs(apart)

    return ["### SLIDER: held-out backgrounds (generated gaps, sizes 268-340 px wide)", "",
            f"training: {args.count} captchas from {args.backgrounds} backgrounds, {trained}", "",
            "| answer | captchas | mean error px | median | within 2 px | within 3 px | within 5 px |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            row("trained model (background only)", model_errors, (2, 3, 5)),
            *(row(f"trained model, {style} gaps", errors, (2, 3, 5)) for style, errors in styles.items()),
            row("with the piece: the training-free matcher (the API's answer)", served_errors, (2, 3, 5)), "",
            f"served through Recognizer: {1000 * float(np.median(times)):.2f} ms per captcha (median)", "",
            f"real slider captchas (slider_toutiao, {len(real)}, unlabelled): the trained model and the "
            f"matcher agree within 5 px on {(gaps <= 5).mean():.3f} of them, within 15 px (the same gap) on "
            f"{(gaps <= 15).mean():.3f}; the model's x minus the matcher's, median {np.median(apart):.1f} px", ""], root, sent


def bench_rotate(args: argparse.Namespace, work: Path) -> tuple[list[str], Path, list[bytes]]:
    source, held = split_pictures(args.pictures, work, None)
    root, trained = workspace(work, "ROTATE", source, args.count, args.minutes, args.setting, args.reuse)
    recognizer = Recognizer(root)
    rng = random.Random(12)
    errors, constant, times, sent = [], [], [], []
    truths = []
    for i in range(args.test):
        spec = RotateSpec(rng.choice((120, 152, 200)), rng.choice(("circle", "circle", "square")),
                          None, "png")
        angle = rng.randrange(360)
        image = turned(open_image(held[i % len(held)]), angle, spec.size, spec.crop, (255, 255, 255))
        answer = answered(recognizer, image, sent, times)
        errors.append(angle_error(answer["angle"], angle))
        truths.append(angle)
    best = min(range(360), key=lambda guess: sum(angle_error(guess, t) for t in truths))
    constant = [angle_error(best, t) for t in truths]

    return ["### ROTATE: held-out pictures (turned at random, circle and square crops, 120-200 px)", "",
            f"training: {args.count} captchas from {len(list(source.iterdir()))} upright pictures, {trained}", "",
            "| answer | captchas | mean error deg | median | within 5 deg | within 10 deg |",
            "| --- | --- | --- | --- | --- | --- |",
            row("trained model", errors, (5, 10)), row(f"constant guess ({best} deg)", constant, (5, 10)), "",
            f"served through Recognizer: {1000 * float(np.median(times)):.2f} ms per captcha (median)", ""], root, sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="+", default=["SLIDER", "ROTATE"], choices=["SLIDER", "ROTATE", "MATCHER"])
    parser.add_argument("--pictures", type=Path, default=SHARED / "photos")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--count", type=int, default=4000, help="captchas generated for training")
    parser.add_argument("--backgrounds", type=int, default=40, help="SLIDER: backgrounds the site reuses")
    parser.add_argument("--test", type=int, default=500, help="held-out captchas answered")
    parser.add_argument("--work", type=Path, default=Path("/tmp/capforge-measured"))
    parser.add_argument("--setting", action="append", default=[], metavar="LINE",
                        help="a line added to each workspace's settings.py ('IMAGE_WIDTH = 64'); repeatable")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--reuse", action="store_true", help="answer again with workspaces exported by an earlier run")
    parser.add_argument("--serve", action="store_true", help="also time POST /api/v1/recognize against a CTC model's")
    args = parser.parse_args()
    lines = [f"## {datetime.date.today()}: `{' '.join(['.venv/bin/python bench/measured.py', *sys.argv[1:]])}`", "",
             f"machine: {describe()}", ""]
    served = []
    for mode in args.modes:
        work = args.work / mode.lower()
        work.mkdir(parents=True, exist_ok=True)
        table, root, sent = {"SLIDER": bench_slider, "ROTATE": bench_rotate, "MATCHER": bench_matcher}[mode](args, work)
        lines += table
        if root is not None:
            served.append((mode, root, sent))
        print("\n".join(table), flush=True)
    if args.serve:
        (args.work / "ctc").mkdir(parents=True, exist_ok=True)
        reference, images = text_reference(args.work / "ctc")
        text_ms = http_latency(reference, images)
        lines += ["### Per request over HTTP (app.py, one uvicorn worker, loopback, sequential; median)", "",
                  "Beside each, in one process: decoding and preprocessing the image, then the model alone "
                  "(onnxruntime, one thread), and the image's size.", "",
                  "| model | ms per request | against the text model | decode + preprocess ms | model ms | image KB |",
                  "| --- | --- | --- | --- | --- | --- |",
                  f"| CTC text model (160x60 captchas) | {text_ms:.2f} | 1.00 | "
                  + " | ".join(f"{v:.2f}" for v in stages(reference, images)) + " |"]
        for mode, root, sent in served:  # photos: as PNG, and as JPEG (what the real slider site here serves)
            for kind, images in (("PNG", sent[:200]), ("JPEG q90", [as_jpeg(data) for data in sent[:200]])):
                ms = http_latency(root, images)
                lines.append(f"| {mode}, {kind} | {ms:.2f} | {ms / text_ms:.2f} | "
                             + " | ".join(f"{v:.2f}" for v in stages(root, images)) + " |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        RESULTS.parent.mkdir(exist_ok=True)
        old = RESULTS.read_text(encoding="utf-8") if RESULTS.is_file() else "# SLIDER and ROTATE (bench/measured.py)\n"
        RESULTS.write_text(old.rstrip() + "\n\n" + text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
