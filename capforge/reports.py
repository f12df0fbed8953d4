"""The test step's reports: the JSON file, written atomically, and its pictures: the worst
answers, the most confused symbols, and how well the confidences hold (a reliability diagram).
matplotlib draws them off-screen (Agg)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:  # only for annotations
    from capforge.workspace import Workspace

CONFUSED_SYMBOLS = 12  # symbols shown in the confusion picture, the most confused first


def pyplot() -> Any:
    """matplotlib's pyplot on the off-screen backend (servers and CI have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def image_grid(count: int, columns: int, row_height: float) -> tuple[Any, list[Any]]:
    """A figure of ``count`` picture panels, ``columns`` to a row, axes hidden; the panels."""
    plt = pyplot()
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(12, row_height * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    return fig, list(axes.flat)[:count]


def save_figure(fig: Any, path: Path) -> None:
    """Write ``fig`` to ``path`` and free it."""
    fig.tight_layout()
    fig.savefig(path)
    pyplot().close(fig)


def worst_grid(rows: list[dict[str, Any]], path: Path, limit: int = 24, unit: str | None = None) -> None:
    """PNG grid of the wrong answers, most confident first (the most dangerous ones); for
    measured answers (``unit``: rows carry their ``error``), the largest errors first."""
    from PIL import Image

    if unit:
        wrong = sorted(rows, key=lambda r: -r["error"])[:limit]
    else:
        wrong = sorted((r for r in rows if not r["correct"]), key=lambda r: -r["confidence"])[:limit]
    if not wrong:
        return
    fig, panels = image_grid(len(wrong), 4, 1.8)
    for axis, row in zip(panels, wrong):
        with Image.open(row["path"]) as image:
            axis.imshow(image.convert("RGB"))
        how = f"off by {row['error']:.1f} {unit}" if unit else f"{row['confidence']:.2f}"
        axis.set_title(f"{row['label']} -> {row['prediction']} ({how})", fontsize=9)
    save_figure(fig, path)


def confusion_picture(confusions: Counter, path: Path) -> None:
    """A matrix of substitutions (true symbol -> read as) over the most confused symbols."""
    weight: Counter = Counter()
    for (true, predicted), count in confusions.items():
        weight[true] += count
        weight[predicted] += count
    symbols = sorted(s for s, _ in weight.most_common(CONFUSED_SYMBOLS))
    matrix = np.array([[confusions.get((t, p), 0) for p in symbols] for t in symbols])
    plt = pyplot()
    size = 2.5 + 0.45 * len(symbols)
    fig, axis = plt.subplots(figsize=(size, size))
    if symbols:
        axis.imshow(matrix, cmap="Reds")
        axis.set_xticks(range(len(symbols)), symbols)
        axis.set_yticks(range(len(symbols)), symbols)
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                axis.text(j, i, str(count), ha="center", va="center", fontsize=8)
        axis.set_xlabel("read as")
        axis.set_ylabel("true symbol")
    else:
        axis.axis("off")
        axis.text(0.5, 0.5, "no symbol was read as another", ha="center", va="center")
    axis.set_title("most confused symbols")
    save_figure(fig, path)


def reliability_picture(buckets: Sequence[dict[str, Any]], path: Path) -> None:
    """Accuracy per confidence bucket against the diagonal a calibrated model follows, with the
    number of answers in each bucket."""
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=(3, 1), sharex=True)
    centres = [(b["from"] + b["to"]) / 2 for b in buckets]
    width = buckets[0]["to"] - buckets[0]["from"] if buckets else 0.1
    top.bar(centres, [b["accuracy"] or 0.0 for b in buckets], width=width * 0.9, color="tab:blue",
            label="share right")
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", label="calibrated")
    top.set_ylim(0, 1)
    top.set_ylabel("share of answers right")
    top.set_title("reliability: confidence against accuracy")
    top.legend(loc="upper left")
    bottom.bar(centres, [b["count"] for b in buckets], width=width * 0.9, color="tab:grey")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("answers")
    save_figure(fig, path)


def save_report(workspace: Workspace, split: str, report: dict[str, Any]) -> Path:
    """Write reports/<split>_report.json (under a temporary name first); note its path in it."""
    reports = workspace.root / "reports"
    reports.mkdir(exist_ok=True)
    target = reports / f"{split}_report.json"
    partial = target.with_name(target.name + ".part")
    partial.write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(partial, target)
    report["report_path"] = workspace.relative(target)
    return target
