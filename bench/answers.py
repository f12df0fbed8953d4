"""Answers, not readings: arithmetic results on the real `math` set, 12306 photo grids answered
whole (the real `tiles12306` set), animated GIF captchas and Chinese text captchas (both
generated), each through the user's flow (bench/realsets.py's
run_capforge: New_work.py, check_file.py's suggestions, split, pack, train.py --minutes N,
save_model.py, test.py), beside ddddocr's bundled model on the same test images.

    python bench/answers.py --kinds math gif chinese --minutes 10
    python bench/answers.py --kinds grid --minutes 5

Writes bench/results/answers.md (rows kept in bench/results/answers.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from machine import describe  # noqa: E402
from realsets import GIVEN_TEST, SEED, RealSet, images_of, run_capforge, run_ddddocr  # noqa: E402

RESULTS = HERE / "results"
COUNTS = {"train": 20000, "test": 1000}
HANZI = "hanzi:500"  # 500 of the 3,755 common characters, spread over them
KINDS: dict[str, dict[str, Any]] = {
    "math": {"what": "real `math` set (a+b), ANSWER = 'arithmetic': the sum answered", "target": "answers >= 0.99",
             "settings": GIVEN_TEST + "ANSWER = 'arithmetic'\n"},
    "gif": {"what": "generated 4-frame GIFs, 4 of 0-9a-z, first frame empty, FRAMES = 'darkest'",
            "target": "seq. accuracy >= 0.95", "settings": GIVEN_TEST + "FRAMES = 'darkest'\n",
            "spec": {"charset": "0123456789abcdefghijklmnopqrstuvwxyz", "fmt": "gif", "frames": 4}},
    "grid": {"what": "real `tiles12306`: tile classifier (GRID) on 640 tiles, answering the 100 whole captchas of "
                     "`full/` (prompts as a crawler sends them: bench/data/tiles12306_full_prompts.txt)",
             "target": "exact share, beside what the tile accuracy predicts", "settings": GIVEN_TEST},
    "chinese": {"what": f"generated 4 Chinese characters of {HANZI} (fonts-wqy-microhei)",
                "target": "seq. accuracy >= 0.95", "settings": GIVEN_TEST, "spec": {"charset": HANZI}},
    "chinese100": {"what": "generated 4 Chinese characters of hanzi:100 (fonts-wqy-microhei)",
                   "target": "(how the charset's size weighs)", "settings": GIVEN_TEST, "spec": {"charset": "hanzi:100"}},
}


def generated(kind: str, works: Path) -> Path:
    """The kind's generated train/ and test/ (drawn once into ``works``), as the real sets are laid out."""
    from capforge.data.generate import CaptchaSpec, font_files, generate, named_charset

    options = dict(KINDS[kind]["spec"])
    charset = named_charset(options.pop("charset"))
    spec = CaptchaSpec(charset, 4, 4, fonts=font_files("", charset), **options)
    root = works / f"{kind}-data"
    for split, count in COUNTS.items():
        if len(images_of(root / split)) < count:
            generate(spec, root / split, count, seed=SEED + (split == "test"))
    return root


def run_grid(datasets: Path, works: Path, minutes: float) -> list[dict[str, Any]]:
    """GRID on tiles12306: the tile classifier trained on its tiles, then test.py on the whole
    captchas, with the prompts sent and with them read by ddddocr (checked against ours)."""
    from realsets import new_workspace, script

    from capforge.modes.grid import predicted_exact

    data = datasets / "tiles12306"
    spec = RealSet("tiles", "GRID", lambda p: p.parent.name, KINDS["grid"]["settings"])
    ws, log, suggestions = new_workspace("grid", spec, data, None, works, "_answers")
    grid = ws / "data" / "grid"
    shutil.copytree(data / "full", grid)
    shutil.copy2(HERE / "data" / "tiles12306_full_prompts.txt", grid / "prompts.txt")
    started = time.monotonic()
    for step, *args in (("split_dataset.py",), ("pack_dataset.py",), ("train.py", "--minutes", str(minutes)),
                        ("save_model.py",), ("test.py",)):
        script(ws, step, *args, log=log)
    minutes_taken = (time.monotonic() - started) / 60
    epochs = len((ws / "logs" / "training.csv").read_text().splitlines()) - 1
    rows = []
    for contender, extra in (("capforge (prompts sent)", []), ("capforge (prompts read: PROMPT_MODEL='ddddocr')",
                                                               ["--set", "PROMPT_MODEL=ddddocr"])):
        if extra:
            script(ws, "test.py", *extra, log=log)
        report = json.loads((ws / "reports" / "test_report.json").read_text())
        tiles, grid = report["sequence_accuracy"], report["grid"]
        read = "" if grid["prompts_read_right"] is None else f"; prompts read right {grid['prompts_read_right']:.2f}"
        rows.append({"accuracy": tiles, "answers": grid["exact"], "minutes": minutes_taken, "epochs": epochs,
                     "images": report["images"], "ms": report["ms_per_image"], "contender": contender,
                     "note": f"{grid['captchas']} whole captchas{read}; tiles clicked: precision "
                             f"{grid['tile_precision']:.4f}, recall {grid['tile_recall']:.4f}; "
                             f"{predicted_exact(tiles, grid)}; settings: "
                             + ", ".join(f"{k}={v!r}" for k, v in suggestions.items() if k != "CHARSET")})
    return rows


def run(kind: str, datasets: Path, works: Path, minutes: float, overrides: Sequence[str] = ()) -> list[dict[str, Any]]:
    """capforge's and ddddocr's rows for ``kind`` (for the grid, capforge's alone: ddddocr has no tile model);
    ``overrides``: KEY=VALUE settings over the suggested ones (text kinds)."""
    if kind == "grid":
        return [stamp(row, kind, minutes) for row in run_grid(datasets, works, minutes)]
    data = datasets / "math" if kind == "math" else generated(kind, works)
    label = (lambda p: re.split(r"[_-]", p.stem)[0].lower()) if kind == "math" else (lambda p: p.name.split("_")[0])
    spec = RealSet("text", "CTC", label, KINDS[kind]["settings"])
    ours = run_capforge(kind, spec, data, None, minutes, works, list(overrides), "_answers")
    if overrides:
        ours["note"] += "; --set " + " ".join(overrides)
    report = json.loads((works / f"{kind}_all_answers" / "reports" / "test_report.json").read_text())
    ours |= {"answers": report["answer_accuracy"], "contender": "capforge"}
    theirs = run_ddddocr(spec, data) | {"contender": "ddddocr"}
    if kind == "math":  # ddddocr reads the expression; the site wants its sum
        theirs["answers"] = ddddocr_answers(data, label)
    return [stamp(row, kind, minutes) for row in (ours, theirs)]


def stamp(row: dict[str, Any], kind: str, minutes: float) -> dict[str, Any]:
    """``row`` with what it measured, when, how and where."""
    row.pop("calibration", None)
    return row | {"kind": kind, "budget": minutes, "run": datetime.date.today().isoformat(),
                  "command": " ".join(["python bench/answers.py", *sys.argv[1:]]), "machine": describe()}


def ddddocr_answers(data: Path, label: Any) -> float:
    """The share of ``data``'s test images whose sum ddddocr's reading gives (ANSWER = 'arithmetic')."""
    from realsets import ddddocr_reader

    from capforge.modes.answer_rules import RULES

    ocr, rule = ddddocr_reader(), RULES["arithmetic"]
    test = images_of(data / "test")
    right = [(rule.answer_of(ocr.classification(p.read_bytes()).lower()) or "") == rule.answer_of(label(p))
             for p in test]
    return sum(right) / len(test)


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["# Answers, not readings: arithmetic, photo grids, animated GIFs, Chinese text\n",
             f"Machine: {describe()}.  \nEach row: the user's flow (bench/realsets.py run_capforge) with "
             "`train.py --minutes N`; ddddocr's bundled model on the same test images, no training.\n",
             "| kind | what | target | contender | seq. accuracy (reading) | answers right | CER | minutes | "
             "epochs | ms/image | test images | run | command | notes |", "|" + " --- |" * 14]
    for row in sorted(rows, key=lambda r: (r["kind"], r["contender"])):
        answers = "" if row.get("answers") is None else f"{row['answers']:.4f}"
        cer = "" if row.get("cer") is None else f"{row['cer']:.4f}"
        kind = KINDS[row["kind"]]
        lines.append(f"| {row['kind']} | {kind['what']} | {kind['target']} | {row['contender']} | "
                     f"{row['accuracy']:.4f} | {answers} | {cer} | {row.get('minutes', 0):.1f} | "
                     f"{row.get('epochs', '')} | {row.get('ms', 0):.2f} | {row.get('images', '')} | {row['run']} | "
                     f"`{row['command']}` | {row.get('note', '')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="*", choices=list(KINDS), default=list(KINDS))
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per run (default 10)")
    parser.add_argument("--datasets", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    parser.add_argument("--works", type=Path, default=Path("/tmp/capforge-answers"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting over the suggested ones, for every step (text kinds); repeatable")
    parser.add_argument("--no-write", action="store_true", help="print only, keep bench/results as it is")
    args = parser.parse_args()
    args.works.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "answers.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    for kind in args.kinds:
        new = run(kind, args.datasets, args.works, args.minutes, args.overrides)
        if not args.no_write:
            rows = [r for r in rows if r["kind"] != kind] + new  # a kind's rows are measured together
            path.write_text(json.dumps(rows, indent=1, ensure_ascii=False))
            (RESULTS / "answers.md").write_text(markdown(rows))
        for row in new:
            print(f"{kind} {row['contender']}: reading {row['accuracy']:.4f}, answers {row.get('answers')}, "
                  f"{row.get('minutes', 0):.1f} min; {row.get('note', '')}", flush=True)


if __name__ == "__main__":
    main()
