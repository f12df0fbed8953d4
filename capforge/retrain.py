"""``capforge retrain``: learn from newly labelled images, and serve the result only if it is better.

The new images in ``data/pool`` (reviewed, reported right, or dropped in) are split into train,
validation and a held-out ``data/recent`` (RECENT_SPLIT of them); the test split never changes.
Training continues from the current best weights; the candidate is exported beside the served
model and both are read through the serving path on the fixed test split and on the recent one.
The gate promotes the candidate only when it is not worse on the test split beyond sampling
noise and is better on the recent split beyond it (both by McNemar's exact test on the images one
gets right and the other wrong, 5 % two-sided); otherwise the served export stays, and the report
says why. A candidate worse on the test split is dropped (the checkpoint goes back to the served
model's); one that is only not better yet is kept as the starting point of the next retrain, so a
young model's training adds up over rounds instead of starting again from the served weights each
time. A running server picks up a promoted export by itself (it watches exports/current).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from capforge.atomic import write_atomically
from capforge.data.images import iter_images
from capforge.errors import DataError, WorkspaceError
from capforge.workspace import RECENT, Workspace

CANDIDATE = "candidate"
BEFORE = "best.before-retrain.keras"
SIGNIFICANCE = 0.025  # one-sided, so a two-sided 5 %: a smaller difference is sampling noise


@dataclass
class Figures:
    """One model on one split: images, how many it reads right, and which."""

    images: int
    right: int
    correct: list[bool] = field(repr=False)

    @property
    def accuracy(self) -> float:
        return self.right / self.images if self.images else 0.0


@dataclass
class Verdict:
    promote: bool
    reasons: list[str]
    won: int  # test images only the candidate reads
    lost: int  # test images only the current model reads
    worse: bool  # worse on the test split beyond sampling noise


def mcnemar_p(more: int, fewer: int) -> float:
    """Exact one-sided McNemar p-value: how likely one model reads ``more`` images the other
    misses, against ``fewer`` the other way round, if both were equally good (each changed answer
    then a fair coin). Exact, not the normal approximation: a gate sees a handful of changes."""
    changed = more + fewer
    return sum(math.comb(changed, k) for k in range(more, changed + 1)) / 2 ** changed


def changes(current: Sequence[bool], candidate: Sequence[bool]) -> tuple[int, int]:
    """(images only the candidate reads, images only the current model reads)."""
    won = sum(n and not c for c, n in zip(current, candidate))
    lost = sum(c and not n for c, n in zip(current, candidate))
    return won, lost


def decide(test_current: Sequence[bool], test_candidate: Sequence[bool],
           recent_current: Sequence[bool], recent_candidate: Sequence[bool]) -> Verdict:
    """The promotion gate, on per-image correctness (same images, same order, for both models):
    not worse on the test split and better on the recent one, each beyond sampling noise by the
    same test (so a gain of one image, or of five with none lost, never promotes: six at least)."""
    won, lost = changes(test_current, test_candidate)
    worse = mcnemar_p(lost, won) <= SIGNIFICANCE
    reasons = [f"test split: the candidate reads {won} image(s) the current model misses and misses {lost} it "
               f"reads; {'worse beyond' if worse else 'within'} sampling noise (McNemar, "
               f"p = {mcnemar_p(lost, won):.3f} that it is this much worse by chance)"]
    gained, dropped = changes(recent_current, recent_candidate)
    chance = mcnemar_p(gained, dropped)
    better = chance <= SIGNIFICANCE
    reasons.append(f"recent split: {sum(recent_candidate)} of {len(recent_candidate)} right against "
                   f"{sum(recent_current)} for the current model ({gained} gained, {dropped} lost; p = "
                   f"{chance:.3f} by chance); {'better' if better else 'not better'} beyond sampling noise")
    return Verdict(not worse and better, reasons, won, lost, worse)


def figures(workspace: Workspace, settings: Mapping[str, Any], export: Path, split: str) -> Figures:
    """``export``'s answers on ``split`` through the serving path (onnxruntime, calibrated)."""
    from capforge.evaluate import answer_split
    from capforge.serve.predictor import Predictor

    rows, _ = answer_split(workspace, settings, Predictor(export), split, progress=False)
    rows.sort(key=lambda row: row["path"])
    correct = [row["correct"] for row in rows]
    return Figures(len(correct), sum(correct), correct)


def retrain(workspace: Workspace, settings: Mapping[str, Any], minutes: float | None) -> dict[str, Any]:
    """Split and pack what is new, train on from the best weights, gate, promote or keep; return
    the report (also written to reports/retrain_<time>.json and .txt)."""
    from capforge.pack import pack
    from capforge.split import split
    from capforge.export import export, retire
    from capforge.train import BEST, train

    current, best = workspace.exports / "current", workspace.checkpoints / BEST
    if not (current / "manifest.json").is_file() or not best.is_file():
        raise WorkspaceError("retrain improves a trained and exported model: run train.py and save_model.py first")
    if not any(iter_images(workspace.pool)):
        raise DataError("nothing new to learn from: data/pool holds no images; review the inbox "
                        "(capforge review) or drop labelled images into data/pool")
    started = _dt.datetime.now()
    counts = split(workspace, settings, shares={RECENT: settings["RECENT_SPLIT"],
                                                "validation": settings["VALIDATION_SPLIT"]}).counts
    print(f"new images: train +{counts['train']}, validation +{counts['validation']}, recent +{counts[RECENT]}",
          flush=True)
    if not any(iter_images(workspace.split_dir(RECENT))):
        raise DataError("data/recent is empty: too few new images to hold any out (RECENT_SPLIT="
                        f"{settings['RECENT_SPLIT']}); label more and run retrain again (they stay in train)")
    pack(workspace, settings)
    shutil.copy2(best, workspace.checkpoints / BEFORE)
    summary = train(workspace, settings, minutes, continue_from_best=True)
    export(workspace, settings, CANDIDATE)
    candidate = workspace.exports / CANDIDATE
    measured = {split_name: {"current": figures(workspace, settings, current, split_name),
                             "candidate": figures(workspace, settings, candidate, split_name)}
                for split_name in ("test", RECENT)}
    verdict = decide(measured["test"]["current"].correct, measured["test"]["candidate"].correct,
                     measured[RECENT]["current"].correct, measured[RECENT]["candidate"].correct)
    if verdict.promote:
        previous = retire(workspace)
        os.replace(candidate, current)
        (workspace.checkpoints / BEFORE).unlink()
        outcome = f"promoted: exports/current is the new model; the old one is {workspace.relative(previous)}"
    elif verdict.worse:
        os.replace(workspace.checkpoints / BEFORE, best)  # the checkpoint matches the served export again
        outcome = ("refused: exports/current is unchanged; the candidate stays in exports/candidate "
                   "for a look, and checkpoints/best.keras is the served model's again")
    else:  # not worse, only not better yet: the next retrain goes on from here, not from the start
        (workspace.checkpoints / BEFORE).unlink()
        outcome = ("refused: exports/current is unchanged; the candidate, no worse on the test split but not "
                   "better on the recent one, stays in exports/candidate, and the next retrain continues from "
                   "its weights (checkpoints/best.keras)")
    report = {
        "started": started.isoformat(timespec="seconds"), "minutes": minutes, "new_images": dict(counts),
        "training": summary, "promoted": verdict.promote, "reasons": verdict.reasons, "outcome": outcome,
        "test_changes": {"won": verdict.won, "lost": verdict.lost},
        "figures": {s: {m: {k: v for k, v in asdict(f).items() if k != "correct"} | {"accuracy": f.accuracy}
                        for m, f in by_model.items()} for s, by_model in measured.items()},
    }
    report["report_path"] = write_report(workspace, report, started)
    return report


def report_text(report: Mapping[str, Any]) -> str:
    """The readable form of a retrain report."""
    lines = [f"retrain of {report['started']}: {report['outcome']}"]
    for split_name, by_model in report["figures"].items():
        lines.append(f"{split_name:>6}: " + "; ".join(
            f"{model} {f['right']}/{f['images']} = {f['accuracy']:.4f}" for model, f in by_model.items()))
    lines += [f"  - {reason}" for reason in report["reasons"]]
    return "\n".join(lines)


def write_report(workspace: Workspace, report: dict[str, Any], started: _dt.datetime) -> str:
    """reports/retrain_<time>.json and .txt, each complete or absent; returns the JSON's path."""
    folder = workspace.root / "reports"
    folder.mkdir(exist_ok=True)
    target = folder / f"retrain_{started:%Y%m%d-%H%M%S}.json"
    write_atomically(target, json.dumps(report, indent=1, ensure_ascii=False, default=str).encode())
    write_atomically(target.with_suffix(".txt"), (report_text(report) + "\n").encode())
    return workspace.relative(target)
