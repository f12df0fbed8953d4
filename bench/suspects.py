"""Label suspects on real captchas: ``check_file.py --suspects`` on swust4 and henan4.

Each set becomes a workspace as a user starts one (bench/realsets.py: train/ in the pool, the
site's test/ in data/test, check_file.py's suggestions), is split and packed, and then
``check_file.py --suspects --folds F --minutes M`` runs on it. Printed per set: the images,
what the fold models read, how many labels were flagged in each split, which of the wrong test
labels found by eye before (bench/results/defaults.md, "swust4's test labels") are among them,
and a sheet of the flagged images with label and reading (in --works, never in the project:
the sets stay in ../shared) for checking by eye.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from machine import describe  # noqa: E402
from realsets import ROOT, SETS, new_workspace, script  # noqa: E402

# Wrong labels of swust4's test split named by eye before this bench existed (label as filed).
KNOWN_WRONG = {"swust4": {"ayeu", "9y8i", "ebm5", "qbr5", "uu01"}}


def contact_sheet(workspace: Path, suspects: list[dict], path: Path, limit: int = 40) -> None:
    """The first ``limit`` suspects, each with its label and the model's reading."""
    from capforge.data.images import open_image
    from capforge.reports import image_grid, save_figure

    shown = suspects[:limit]
    if not shown:
        return
    fig, panels = image_grid(len(shown), 5, 2.2)
    for axis, suspect in zip(panels, shown):
        with open_image(workspace / suspect["path"]) as image:
            axis.imshow(image.convert("RGB"))
        axis.set_title(f"{suspect['split']}: {suspect['label']} / read {suspect['reading']}", fontsize=8)
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=["swust4", "henan4"])
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--works", type=Path, default=Path("/tmp/capforge-suspects"))
    args = parser.parse_args()
    args.works.mkdir(parents=True, exist_ok=True)
    print(f"# `bench/suspects.py --folds {args.folds} --minutes {args.minutes}`, {datetime.date.today()}, "
          f"{describe()}\n", flush=True)
    for name in args.sets:
        ws, log, _ = new_workspace(name, SETS[name], args.datasets / name, None, args.works, "_suspects")
        script(ws, "split_dataset.py", log=log)
        script(ws, "pack_dataset.py", log=log)
        seconds = script(ws, "check_file.py", "--suspects", "--folds", str(args.folds), "--minutes",
                         str(args.minutes), log=log)
        summary = json.loads((ws / "reports" / "suspects.json").read_text())
        suspects = summary["suspects"]
        by_split = Counter(s["split"] for s in suspects)
        known = KNOWN_WRONG.get(name, set())
        found = {s["label"] for s in suspects if s["split"] == "test"} & known
        sheet = args.works / f"{name}_suspects.png"
        contact_sheet(ws, suspects, sheet)
        below = [d for d in summary["disagreements"] if 0.5 <= d["confidence"] < summary["confidence"]]
        contact_sheet(ws, below, args.works / f"{name}_below.png")  # what a lower threshold would add
        print(f"## {name}: {summary['images']} images, {len(suspects)} flagged in {seconds / 60:.1f} min "
              f"(folds read {', '.join(map(str, summary['fold_accuracy']))})")
        print("flagged by split: " + ", ".join(f"{k} {v}" for k, v in sorted(by_split.items())))
        if known:
            print(f"wrong test labels named before: {len(found)} of {len(known)} flagged ({', '.join(sorted(found))})")
        for threshold in (0.5, 0.7, 0.9):
            above = [d for d in summary["disagreements"] if d["confidence"] >= threshold]
            named = {d["label"] for d in above if d["split"] == "test"} & known
            print(f"at confidence {threshold}: {len(above)} flagged (test {sum(d['split'] == 'test' for d in above)})"
                  + (f", {len(named)} of the {len(known)} named" if known else ""))
        for suspect in suspects[:60]:
            print(f"  {suspect['split']:>10} {Path(suspect['path']).name}: {suspect['label']!r} read "
                  f"{suspect['reading']!r} ({suspect['confidence']:.3f})")
        print(f"sheets: {sheet}, {args.works / f'{name}_below.png'}\n", flush=True)


if __name__ == "__main__":
    main()
