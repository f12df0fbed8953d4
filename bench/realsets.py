"""capforge on real captchas, against a plain reference model and ddddocr, in one run.

For each set in ../shared/datasets (or --datasets) it runs the user's flow with the workspace
scripts, as the README gives them: New_work.py, train/ copied into data/pool and test/ into
data/test, check_file.py with its suggested settings applied, split, pack, train.py --minutes N,
save_model.py, test.py. On the same test images it trains and reads the reference (bench/
reference.py) for the same minutes, and runs ddddocr's bundled model (text sets). It prints one
table and writes it to bench/results/realsets.md (rows kept in bench/results/realsets.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rapidfuzz.distance import Levenshtein

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from machine import describe  # noqa: E402

RESULTS = HERE / "results"
SEED = 7


@dataclass(frozen=True)
class RealSet:
    """How a user would describe one set: its mode, how its files carry labels, and the
    settings they would write from knowing their files (the rest comes from check_file.py)."""

    kind: str  # "text" or "tiles"
    mode: str
    label: Callable[[Path], str]
    settings: str = ""


_LABEL_CACHE: dict[Path, str] = {}


def _cached_labels_file(path: Path) -> str:
    if path not in _LABEL_CACHE:
        table = dict(line.split("\t", 1) for line in (path.parent / "labels.txt").read_text().splitlines() if line)
        _LABEL_CACHE.update({path.parent / name: label.strip().lower() for name, label in table.items()})
    return _LABEL_CACHE[path]


GIVEN_TEST = "TEST_SPLIT = 0.0  # the site's test images are in data/test\n"
SETS: dict[str, RealSet] = {
    "rkn6": RealSet("text", "CTC", lambda p: p.name.split("-")[0].lower(), GIVEN_TEST),
    "henan4": RealSet("text", "CTC", _cached_labels_file, GIVEN_TEST),
    "swust4": RealSet("text", "CTC", lambda p: p.name.split("_")[0].lower(), GIVEN_TEST),
    "digits4": RealSet("text", "CTC", lambda p: p.name.split(".")[0].lower(), GIVEN_TEST),
    "math": RealSet("text", "CTC", lambda p: re.split(r"[_-]", p.stem)[0].lower(), GIVEN_TEST),
    "tiles12306": RealSet("tiles", "NUM_CLASSES", lambda p: p.parent.name, GIVEN_TEST),
}
SMALL = (("swust4", 300), ("henan4", 300))  # the size of a hand-labelled start
# The captcha package's images (4 of 0-9a-z, 160x60), drawn here: a row, never a default run's.
SYNTHETIC = "synthetic"
SETS[SYNTHETIC] = RealSet("text", "CTC", lambda p: p.name.split("_")[0], GIVEN_TEST)
SYNTHETIC_COUNTS = {"train": 20000, "test": 1000}


def synthetic_data(works: Path) -> Path:
    """The synthetic set (train/ and test/, as the real sets are), drawn once into ``works``."""
    from capforge.data.generate import CaptchaSpec, generate

    root = works / "synthetic-data"
    for split, count in SYNTHETIC_COUNTS.items():
        if len(images_of(root / split)) < count:
            shutil.rmtree(root / split, ignore_errors=True)
            generate(CaptchaSpec("0123456789abcdefghijklmnopqrstuvwxyz", 4, 4), root / split, count,
                     seed=SEED + (split == "test"))
    return root


# Every text set in one workspace (one model for five sites): the many-styles case.
POOLED = "pooled"
POOLED_FROM = ("rkn6", "henan4", "swust4", "digits4", "math")
SETS[POOLED] = RealSet("text", "CTC", lambda p: p.name.split("_")[0], GIVEN_TEST)


def pooled_data(datasets: Path, works: Path) -> Path:
    """The text sets' train/ and test/ in one set, each image named <label>_<set>_<n>."""
    root = works / "pooled-data"
    if not (root / "complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        for split in ("train", "test"):
            (root / split).mkdir(parents=True)
            for name in POOLED_FROM:
                for i, path in enumerate(images_of(datasets / name / split)):
                    shutil.copy2(path, root / split / f"{SETS[name].label(path)}_{name}_{i}{path.suffix.lower()}")
        (root / "complete").write_text("")
    return root


def per_site(workspace: Path) -> str:
    """The pooled model's accuracy on each site's test images (its export, read here), and their mean."""
    from capforge.serve.predictor import Predictor

    predictor = Predictor(workspace / "exports" / "current")
    right: dict[str, list[bool]] = {}
    for path in images_of(workspace / "data" / "test"):
        label, site = path.name.split("_")[:2]
        right.setdefault(site, []).append(predictor.predict([path.read_bytes()])[0].text == label)
    share = {site: sum(r) / len(r) for site, r in right.items()}
    return "per site: " + ", ".join(f"{site} {v:.3f}" for site, v in share.items()) + \
        f"; mean per site {sum(share.values()) / len(share):.3f}"


def images_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".gif", ".bmp"))


def train_items(root: Path, limit: int | None) -> list[Path]:
    """The training images, or a seeded choice of ``limit`` of them."""
    paths = images_of(root / "train")
    if limit and limit < len(paths):
        paths = sorted(random.Random(SEED).sample(paths, limit))
    return paths


def score(predictions: list[str], labels: list[str]) -> tuple[float, float | None]:
    """Sequence accuracy and CER."""
    right = sum(p == t for p, t in zip(predictions, labels))
    edits = sum(Levenshtein.distance(t, p) for p, t in zip(predictions, labels))
    return right / len(labels), edits / max(1, sum(len(t) for t in labels))


def script(ws: Path, name: str, *args: str, log: Path) -> float:
    """Run a workspace script as a user would; return its seconds. Output goes to ``log``."""
    started = time.monotonic()
    with log.open("a") as out:
        out.write(f"\n$ python {name} {' '.join(args)}\n")
        out.flush()
        code = subprocess.run([sys.executable, str(ws / name), *args], stdout=out, stderr=subprocess.STDOUT,
                              cwd=ws).returncode
    if code not in (0, 1) or (code == 1 and name != "check_file.py"):
        raise RuntimeError(f"{name} exited {code}; see {log}")
    return time.monotonic() - started


def apply_suggestions(ws: Path) -> dict[str, Any]:
    """Append check_file.py's suggested settings to settings.py, as a user accepting them would."""
    suggestions = json.loads((ws / "data" / "check_report.json").read_text())["suggestions"]
    with (ws / "settings.py").open("a") as f:
        f.write("# suggested by check_file.py\n")
        for key, value in suggestions.items():
            f.write(f"{key} = {value!r}\n")
    return suggestions


def confidence_ordered(calibration: list[dict[str, Any]], least: int = 10) -> bool:
    """Whether each confidence bucket (of at least ``least`` answers) is right at least as often
    as every lower one, within two standard errors of the difference."""
    rows = [r for r in calibration if r["count"] >= least]
    for i, low in enumerate(rows):
        for high in rows[i + 1:]:
            p = (low["accuracy"] * low["count"] + high["accuracy"] * high["count"]) / (low["count"] + high["count"])
            noise = 2 * (p * (1 - p) * (1 / low["count"] + 1 / high["count"])) ** 0.5
            if high["accuracy"] < low["accuracy"] - max(noise, 1e-9):
                return False
    return True


def first_right_epoch(csv_text: str) -> int | None:
    """The first epoch (1-based) whose validation score was above 0: when CTC left its plateau."""
    import csv
    import io

    for row in csv.DictReader(io.StringIO(csv_text)):
        score = row.get("val_seq_acc") or row.get("val_map50") or "0"
        if float(score) > 0:
            return int(row["epoch"]) + 1
    return None


def plateau_note(first: int | None, epochs: int, seconds: float) -> str:
    """When the first validation answer was right (CTC's all-blank plateau left), in minutes."""
    if first is None:
        return "never right on validation: did not learn within the budget"
    return f"first right at epoch {first} (~{seconds * first / max(1, epochs) / 60:.1f} min)"


def new_workspace(name: str, spec: RealSet, data: Path, limit: int | None, works: Path,
                  tag: str, unlabelled: bool = False) -> tuple[Path, Path, dict[str, Any]]:
    """A workspace of the set as a user starts one: train/ in data/pool, test/ in data/test,
    check_file.py's suggestions applied; with ``unlabelled``, the training images left out by
    ``limit`` in data/unlabelled under names that hide their labels. Returns it, its log and the
    suggestions."""
    site = f"{name}_{limit or 'all'}{tag}"
    ws = works / site
    if ws.exists():
        shutil.rmtree(ws)
    log = works / f"{site}.log"
    log.write_text("")
    subprocess.run([sys.executable, str(ROOT / "New_work.py"), str(works), site, "--mode", spec.mode],
                   check=True, stdout=subprocess.DEVNULL)
    for source in train_items(data, limit):
        target = ws / "data" / "pool" / source.relative_to(data / "train")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    if unlabelled:
        kept = set(train_items(data, limit))
        (ws / "data" / "unlabelled").mkdir(parents=True, exist_ok=True)
        for i, source in enumerate(p for p in train_items(data, None) if p not in kept):
            shutil.copy2(source, ws / "data" / "unlabelled" / f"capture{i:05d}{source.suffix}")
    for extra in (data / "train").glob("labels.*"):
        shutil.copy2(extra, ws / "data" / "pool" / extra.name)
    shutil.copytree(data / "test", ws / "data" / "test", dirs_exist_ok=True)
    with (ws / "settings.py").open("a") as f:
        f.write(spec.settings)
    script(ws, "check_file.py", log=log)
    return ws, log, apply_suggestions(ws)


def run_capforge(name: str, spec: RealSet, data: Path, limit: int | None, minutes: float, works: Path,
                 overrides: list[str], tag: str, unlabelled: bool = False) -> dict[str, Any]:
    """The user's flow with the workspace scripts; the figures of its test report."""
    from accuracy import inference_ms

    from capforge.serve.predictor import Predictor

    ws, log, suggestions = new_workspace(name, spec, data, limit, works, tag, unlabelled)
    sets = [f"--set={o}" for o in overrides]
    script(ws, "split_dataset.py", log=log)
    started = time.monotonic()
    script(ws, "pack_dataset.py", *sets, log=log)
    train_seconds = script(ws, "train.py", "--minutes", str(minutes), *sets, log=log)
    script(ws, "save_model.py", *sets, log=log)
    script(ws, "test.py", *sets, log=log)
    total = (time.monotonic() - started) / 60
    report = json.loads((ws / "reports" / "test_report.json").read_text())
    log_text = (ws / "logs" / "training.csv").read_text()
    epochs = max(0, len(log_text.splitlines()) - 1)
    predictor = Predictor(ws / "exports" / "current")
    ms = inference_ms(predictor, images_of(ws / "data" / "test"), 1)
    labels = f"; {suspected_label_errors(ws)}" if spec.kind == "text" else ""
    if name == POOLED:
        labels += f"; {per_site(ws)}"
    return {"accuracy": report["sequence_accuracy"], "cer": report.get("cer") if spec.kind == "text" else None,
            "minutes": total, "epochs": epochs, "ms": ms, "images": report["images"],
            "calibration": report["calibration"],
            "note": f"{plateau_note(first_right_epoch(log_text), epochs, train_seconds)}; confidence "
                    f"{'ordered' if confidence_ordered(report['calibration']) else 'NOT ordered'}; settings: "
                    + ", ".join(f"{k}={v!r}" for k, v in suggestions.items() if k != "CHARSET") + labels}


def run_reference(spec: RealSet, data: Path, limit: int | None, minutes: float) -> dict[str, Any]:
    from reference import TRAINERS

    train = [(p, spec.label(p)) for p in train_items(data, limit)]
    test = images_of(data / "test")
    labels = [spec.label(p) for p in test]
    result = TRAINERS[spec.kind](train, test, minutes, SEED)
    accuracy, cer = score(result.predictions, labels)
    return {"accuracy": accuracy, "cer": cer if spec.kind == "text" else None, "minutes": result.minutes,
            "epochs": result.epochs, "ms": result.ms_per_image, "images": len(test), "note": "Keras, traced call"}


def ddddocr_reader() -> Any:
    try:
        import ddddocr
    except ImportError:  # bench only: bench/requirements.txt
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", str(HERE / "requirements.txt")],
                       check=True)
        import ddddocr
    return ddddocr.DdddOcr(show_ad=False)


def suspected_label_errors(workspace: Path) -> str:
    """How many of capforge's wrong test answers ddddocr, a model never trained on the set, reads
    exactly as capforge does: such an "error" is most likely a wrong label (look at them in
    reports/test_worst.png)."""
    wrong = json.loads((workspace / "reports" / "test_report.json").read_text())["wrong"]
    ocr = ddddocr_reader()
    same = sum(ocr.classification(Path(row["path"]).read_bytes()).lower() == row["prediction"] for row in wrong)
    return f"{same} of {len(wrong)} wrong answers read the same by ddddocr (suspected label errors)"


def run_ddddocr(spec: RealSet, data: Path) -> dict[str, Any]:

    ocr = ddddocr_reader()
    test = images_of(data / "test")
    started = time.perf_counter()
    predictions = [ocr.classification(p.read_bytes()).lower() for p in test]
    ms = (time.perf_counter() - started) * 1000 / len(test)
    accuracy, cer = score(predictions, [spec.label(p) for p in test])
    return {"accuracy": accuracy, "cer": cer, "minutes": 0.0, "epochs": 0, "ms": ms, "images": len(test),
            "note": "bundled model, no training"}


def load_rows() -> list[dict[str, Any]]:
    path = RESULTS / "realsets.json"
    return json.loads(path.read_text()) if path.exists() else []


def save_rows(rows: list[dict[str, Any]]) -> None:
    RESULTS.mkdir(exist_ok=True)
    partial = RESULTS / "realsets.json.part"
    partial.write_text(json.dumps(rows, indent=1, ensure_ascii=False))
    partial.replace(RESULTS / "realsets.json")


def key(row: dict[str, Any]) -> tuple[Any, ...]:
    return row["set"], row["train"], row["contender"], row["budget"]


def table(rows: list[dict[str, Any]]) -> str:
    """One markdown table: per set and training size, each contender's figures."""
    lines = ["| set | train images | contender | seq. accuracy | CER | minutes | epochs | ms/image | "
             "test images | run | notes |", "|" + " --- |" * 11]
    for row in sorted(rows, key=lambda r: (r["set"], r["train"] == "all", str(r["train"]), r["contender"])):
        cer = "" if row.get("cer") is None else f"{row['cer']:.4f}"
        value = f"{row['accuracy']:.4f}" if "accuracy" in row else "failed"
        lines.append(f"| {row['set']} | {row['train']} | {row['contender']} | {value} | {cer} | "
                     f"{row.get('minutes', 0):.1f} | {row.get('epochs', '')} | {row.get('ms', 0):.2f} | "
                     f"{row.get('images', '')} | {row['run']} | {row.get('note', '')} |")
    return "\n".join(lines)


def write_markdown(rows: list[dict[str, Any]]) -> None:
    """bench/results/realsets.md: one table per budget measured, each with the commands of its rows."""
    parts = ["# Real captcha sets: capforge against the reference CRNN and ddddocr\n\n"
             f"Machine of each row: see realsets.json; the last run: {describe()}.  \n`run` is the date each "
             "row was measured (`--contenders reuse` keeps the contenders' earlier rows). Each budget is per "
             "training run: from pack to the test report for capforge, training alone for the reference.\n"]
    for budget in sorted({r["budget"] for r in rows}):
        shown = [r for r in rows if r["budget"] == budget]
        commands = ", ".join(f"`{c}`" for c in dict.fromkeys(r["command"] for r in shown))
        parts.append(f"\n## `--minutes {budget:g}`\n\nCommands of these rows: {commands}\n\n{table(shown)}\n")
    (RESULTS / "realsets.md").write_text("".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--sets", nargs="*", choices=list(SETS),
                        help="only these sets (none: only the --backbones rows)")
    parser.add_argument("--train-limit", type=int, help="keep a seeded choice of N training images")
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per run (default 5)")
    parser.add_argument("--contenders", choices=("run", "reuse", "skip"), default="run",
                        help="reuse: take the reference and ddddocr rows from an earlier run of this budget")
    parser.add_argument("--only-contenders", action="store_true", help="run the reference and ddddocr only")
    parser.add_argument("--backbones", nargs="*", metavar="NAME",
                        help="also one capforge row per registered backbone on rkn6 (or per NAME given)")
    parser.add_argument("--works", type=Path, default=Path("/tmp/capforge-realsets"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for capforge's steps (e.g. a variant to compare)")
    parser.add_argument("--tag", default="", help="a suffix naming this capforge variant in the table")
    parser.add_argument("--unlabelled", action="store_true",
                        help="the training images --train-limit leaves out go to data/unlabelled, labels hidden "
                             "(rows tagged _unlabelled)")
    parser.add_argument("--label-check", action="store_true",
                        help="add suspected label errors to the capforge rows of an earlier run (its --works)")
    args = parser.parse_args()
    if args.unlabelled:
        args.tag += "_unlabelled"
    print(f"machine: {describe()}", flush=True)
    if args.sets is not None:
        runs = [(s, args.train_limit) for s in args.sets]
    else:
        runs = [(s, args.train_limit) for s in SETS if s not in (SYNTHETIC, POOLED)] + ([] if args.train_limit else list(SMALL))
    args.works.mkdir(parents=True, exist_ok=True)
    rows = load_rows()
    today = datetime.date.today().isoformat()
    command = "python bench/realsets.py " + " ".join(sys.argv[1:])

    def record(name: str, limit: int | None, contender: str, measure: Callable[[], dict[str, Any]]) -> None:
        base = {"set": name, "train": limit or "all", "contender": contender, "budget": args.minutes}
        if args.contenders in ("reuse", "skip") and not contender.startswith("capforge"):
            if args.contenders == "skip" or any(key(r) == key(base) for r in rows):
                return
        print(f"--- {name} ({limit or 'all'} training images): {contender}", flush=True)
        try:
            figures = measure()
        except Exception as exc:  # a contender that cannot run is a row that says so
            figures = {"note": f"failed: {type(exc).__name__}: {str(exc)[:160]}"}
        row = {**base, **figures, "run": today, "machine": describe(), "command": command}
        rows[:] = [r for r in rows if key(r) != key(row)] + [row]
        save_rows(rows)
        print(table([row]).splitlines()[-1], flush=True)

    if args.label_check:
        for row in rows:
            ws = args.works / f"{row['set']}_{row['train']}{args.tag}"
            if row["contender"] == f"capforge{args.tag}" and SETS[row["set"]].kind == "text" and ws.is_dir() \
                    and "suspected" not in row.get("note", ""):
                row["note"] += f"; {suspected_label_errors(ws)}"
        save_rows(rows)
        runs = []
    for name, limit in runs:
        spec = SETS[name]
        data = synthetic_data(args.works) if name == SYNTHETIC else pooled_data(args.datasets, args.works) \
            if name == POOLED else args.datasets / name
        if not args.only_contenders:
            record(name, limit, f"capforge{args.tag}", lambda: run_capforge(
                name, spec, data, limit, args.minutes, args.works, args.overrides, args.tag, args.unlabelled))
        record(name, limit, "reference", lambda: run_reference(spec, data, limit, args.minutes))
        if spec.kind == "text":
            record(name, limit, "ddddocr", lambda: run_ddddocr(spec, data))
    if args.backbones is not None:
        from capforge.models.backbones import BACKBONES

        for backbone in args.backbones or BACKBONES:
            tag = f"{args.tag}/{backbone}"
            record("rkn6", args.train_limit, f"capforge{tag}", lambda: run_capforge(
                "rkn6", SETS["rkn6"], args.datasets / "rkn6", args.train_limit, args.minutes, args.works,
                [*args.overrides, f"BACKBONE={backbone}"], tag.replace("/", "_")))
    write_markdown(rows)
    print(table([r for r in rows if r["budget"] == args.minutes and (r["set"], r["train"] if r["train"] != "all"
                 else None) in runs]))


if __name__ == "__main__":
    main()
