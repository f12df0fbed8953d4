"""test.py for EFFICIENTDET: mAP on the whole test split, through the serving predictor.

Ground truth comes from each image's VOC or YOLO file, predictions from the same Predictor
that serves the model, both in the original image's pixels. Reported: mAP@0.5, mAP@0.75 and
mAP@0.5:0.95 (COCO definition), per-class AP@0.5, precision and recall at the serving
threshold (DETECTION_THRESHOLD), and a PNG grid of predictions (red) over truth (green).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from tqdm import tqdm

from capforge.data.images import iter_images, open_image
from capforge.errors import CapforgeError, DataError
from capforge.modes.efficientdet.boxes import read_boxes
from capforge.modes.efficientdet.metrics import Detection, Truth, coco_map, precision_recall
from capforge.reports import image_grid, save_figure, save_report

if TYPE_CHECKING:  # only for annotations
    from capforge.serve.predictor import Predictor
    from capforge.workspace import Workspace


def _grid(rows: list[dict[str, Any]], path: Path, limit: int = 12) -> None:
    """Predictions (red, with label and score) over ground truth (green) on test images."""
    from matplotlib.patches import Rectangle  # lazily, like matplotlib everywhere: only reports draw

    shown = rows[:limit]
    if not shown:
        return
    fig, panels = image_grid(len(shown), 3, 2.6)
    for axis, row in zip(panels, shown):
        with open_image(row["path"]) as image:
            axis.imshow(image.convert("RGB"))
        for _, (x1, y1, x2, y2) in row["truth"]:
            axis.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="lime", linewidth=1.5))
        for label, score, (x1, y1, x2, y2) in row["found"]:
            axis.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="red", linewidth=1))
            axis.text(x1, y1, f"{label} {score:.2f}", color="red", fontsize=7, va="bottom")
        axis.set_title(Path(row["path"]).name, fontsize=8)
    save_figure(fig, path)


def _detect(predictor: Predictor, path: Path) -> list[Detection]:
    """Every detection down to MAP_THRESHOLD (the decoded candidates), in the image's pixels."""
    array, placed = predictor.placed(path)
    prediction = predictor.answer(predictor.probabilities(array[None])[0], placed)
    return [(b["label"], b["score"], (b["x1"], b["y1"], b["x2"], b["y2"])) for b in prediction.candidates or []]


def evaluate_detection(workspace: Workspace, settings: Mapping[str, Any], predictor: Predictor, source: str,
                       split: str = "test", progress: bool = True) -> dict[str, Any]:
    """Evaluate every image of ``split``; write reports/<split>_report.json and a PNG grid."""
    folder = workspace.split_dir(split)
    fold = not settings["CASE_SENSITIVE"]
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    started = time.perf_counter()
    for path in tqdm(list(iter_images(folder)), desc=f"testing {split}", unit="img", disable=not progress):
        try:
            with open_image(path) as image:
                size = image.size
            truth: list[Truth] = [(b.label.lower() if fold else b.label, (b.x1, b.y1, b.x2, b.y2))
                                  for b in read_boxes(path, *size, workspace.root)]
            rows.append({"path": str(path), "truth": truth, "found": _detect(predictor, path)})
        except CapforgeError:
            skipped.append(workspace.relative(path))
    if not rows:
        raise DataError(f"no images with box labels in {workspace.relative(folder)}; run split_dataset.py")
    seconds = time.perf_counter() - started
    truths = [r["truth"] for r in rows]
    threshold = settings["DETECTION_THRESHOLD"]
    served = [[d for d in r["found"] if d[1] >= threshold] for r in rows]
    report = {
        "split": split, "mode": predictor.mode.name, "model": source, "images": len(rows), "skipped": skipped,
        "objects": sum(len(t) for t in truths),
        **coco_map(truths, [r["found"] for r in rows]),
        "serving_threshold": threshold, **precision_recall(truths, served),
        "ms_per_image": 1000 * seconds / len(rows),
    }
    target = save_report(workspace, split, report)
    _grid(rows, target.with_name(f"{split}_predictions.png"))
    return report


def detection_summary(report: Mapping[str, Any]) -> str:
    """A short readable summary of a detection report."""
    weakest = sorted(report["per_class_ap50"].items(), key=lambda kv: kv[1])[:8]
    return "\n".join([
        f"model: {report['model']}",
        f"{report['split']}: {report['images']} images, {report['objects']} objects"
        + (f" ({len(report['skipped'])} skipped: unreadable or without box labels)" if report["skipped"] else ""),
        f"mAP@0.5 {report['map50']:.4f}   mAP@0.75 {report['map75']:.4f}   mAP@0.5:0.95 {report['map50_95']:.4f}",
        f"at the serving threshold {report['serving_threshold']}: precision {report['precision']:.4f}, "
        f"recall {report['recall']:.4f}",
        "weakest classes (AP@0.5): " + ", ".join(f"{k} {v:.3f}" for k, v in weakest),
        f"{report['ms_per_image']:.2f} ms per image (one at a time, preprocessing included)",
        f"report: {report['report_path']}",
    ])
