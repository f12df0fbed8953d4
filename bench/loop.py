"""The review-and-retrain loop on a real set, with its true labels standing in for the person.

Start from 200 labelled images of ``../shared/datasets/rkn6`` (train, export), then rounds of
pre-label -> correct -> retrain (``--minutes`` each) adding 500, 1,000 and 2,000 more images.
Per round it prints the served model's test accuracy, whether the gate promoted the candidate,
and the person's effort: how many pre-labels had to be changed, against typing every label
from scratch. Workspace scripts run as a user runs them; only the person is simulated.

    python bench/loop.py [--minutes 3] [--rounds 500 1000 2000]
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe  # noqa: E402
from realsets import ROOT, SEED, SETS, apply_suggestions, images_of, script  # noqa: E402

from capforge.errors import ReviewError  # noqa: E402
from capforge.inbox import Inbox, Review, content_key  # noqa: E402
from capforge.settings import load_settings  # noqa: E402
from capforge.workspace import Workspace  # noqa: E402


def test_accuracy(ws: Path, log: Path) -> float:
    script(ws, "test.py", log=log)
    return json.loads((ws / "reports" / "test_report.json").read_text())["sequence_accuracy"]


def correct_inbox(ws: Path, truths: dict[str, str]) -> dict[str, int]:
    """The person: go through the inbox in review order, fixing each pre-label to the truth."""
    review = Review(Inbox(Workspace(ws), load_settings(ws)))
    counts = {"images": 0, "changed": 0, "refused": 0}
    while True:
        item, _ = review.next()
        if item is None:
            return counts
        truth = truths[item.key]
        counts["images"] += 1
        counts["changed"] += item.answer != truth
        try:
            review.act(item.key, "label", truth)
        except ReviewError as exc:  # e.g. a symbol the first 200 labels never showed (outside CHARSET)
            counts["refused"] += 1
            review.act(item.key, "unreadable", reason=str(exc))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--set", dest="name", default="rkn6")
    parser.add_argument("--start", type=int, default=200, help="hand-labelled images to start from")
    parser.add_argument("--rounds", type=int, nargs="*", default=[500, 1000, 2000], help="images added per round")
    parser.add_argument("--minutes", type=float, default=3.0, help="training budget of the start and of each retrain")
    parser.add_argument("--works", type=Path, default=Path("/tmp/capforge-loop"))
    args = parser.parse_args()
    print(f"machine: {describe()}", flush=True)
    spec, data = SETS[args.name], args.datasets / args.name
    paths = images_of(data / "train")
    random.Random(SEED).shuffle(paths)
    ws = args.works / f"{args.name}_loop"
    shutil.rmtree(args.works, ignore_errors=True)
    args.works.mkdir(parents=True)
    log = args.works / "loop.log"
    subprocess.run([sys.executable, str(ROOT / "New_work.py"), str(args.works), ws.name, "--mode", spec.mode],
                   check=True, stdout=subprocess.DEVNULL)
    for source in paths[:args.start]:
        shutil.copy2(source, ws / "data" / "pool" / source.name)
    shutil.copytree(data / "test", ws / "data" / "test", dirs_exist_ok=True)
    with (ws / "settings.py").open("a") as f:
        f.write(spec.settings)
    script(ws, "check_file.py", log=log)
    apply_suggestions(ws)
    for name, argv in (("split_dataset.py", []), ("pack_dataset.py", []), ("train.py", ["--minutes", str(args.minutes)]),
                       ("save_model.py", [])):
        script(ws, name, *argv, log=log)
    rows = [{"round": 0, "labelled": args.start, "added": args.start, "accuracy": test_accuracy(ws, log),
             "promoted": None, "changed": args.start, "from_scratch": args.start, "refused": 0}]
    print(f"round 0: {args.start} hand-labelled, test accuracy {rows[0]['accuracy']:.4f}", flush=True)
    used = args.start
    for number, count in enumerate(args.rounds, 1):
        batch = paths[used:used + count]
        used += count
        scraped = args.works / f"scraped{number}"
        scraped.mkdir()
        truths = {}
        for i, source in enumerate(batch):  # unlabelled, as scraped: the name says nothing
            target = scraped / f"u{i}{source.suffix}"
            shutil.copy2(source, target)
            truths[content_key(target.read_bytes())] = spec.label(source)
        script(ws, "prelabel.py", str(scraped), log=log)
        effort = correct_inbox(ws, truths)
        script(ws, "retrain.py", "--minutes", str(args.minutes), log=log)
        report = json.loads(max((ws / "reports").glob("retrain_*.json")).read_text())
        row = {"round": number, "labelled": rows[-1]["labelled"] + effort["images"] - effort["refused"],
               "added": effort["images"], "accuracy": test_accuracy(ws, log), "promoted": report["promoted"],
               "changed": effort["changed"], "from_scratch": effort["images"], "refused": effort["refused"],
               "candidate_recent": report["figures"]["recent"]["candidate"]["accuracy"],
               "current_recent": report["figures"]["recent"]["current"]["accuracy"]}
        rows.append(row)
        print(f"round {number}: +{row['added']} pre-labelled, {row['changed']} corrected by the person "
              f"({row['changed'] / max(1, row['added']):.0%}; from scratch: {row['from_scratch']} typed), "
              f"{'promoted' if row['promoted'] else 'refused'} (recent split: candidate "
              f"{row['candidate_recent']:.3f}, served {row['current_recent']:.3f}); served model's test "
              f"accuracy {row['accuracy']:.4f}", flush=True)
    result = args.works / "loop.json"
    result.write_text(json.dumps({"rows": rows, "machine": describe(), "date": datetime.date.today().isoformat(),
                                  "command": "python bench/loop.py " + " ".join(sys.argv[1:])}, indent=1))
    print("| round | labelled | added | corrected (effort) | from scratch | refused labels | promoted | test accuracy |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['round']} | {r['labelled']} | {r['added']} | {r['changed']} | {r['from_scratch']} | "
              f"{r['refused']} | {'-' if r['promoted'] is None else 'yes' if r['promoted'] else 'no'} | "
              f"{r['accuracy']:.4f} |")


if __name__ == "__main__":
    main()
