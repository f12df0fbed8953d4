"""Detection quality: average precision with the COCO definition.

For each class, detections of all images are ranked by score; each is a true positive when it
overlaps a not yet matched ground-truth box of its class by at least the IoU threshold.
AP is the mean of the interpolated precision at the 101 recall points 0, 0.01, ..., 1; mAP is
the mean over classes that have ground truth; mAP@0.5:0.95 averages thresholds 0.5 to 0.95.

>>> truth = [[("a", (0, 0, 10, 10))]]
>>> average_precision(truth, [[("a", 0.9, (0, 0, 10, 10))]], 0.5)["map"]
1.0
>>> average_precision(truth, [[("a", 0.9, (5, 5, 15, 15))]], 0.5)["map"]
0.0
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from capforge.modes.efficientdet.anchors import iou_matrix

Truth = tuple[str, Sequence[float]]  # (label, (x1, y1, x2, y2))
Detection = tuple[str, float, Sequence[float]]  # (label, score, corners)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
COCO_THRESHOLDS = np.round(np.arange(0.5, 0.96, 0.05), 2)


def _match(truth: list[list[Truth]], found: list[list[Detection]], label: str,
           threshold: float) -> tuple[np.ndarray, int]:
    """True-positive flags of ``label``'s detections in score order, and its ground-truth count."""
    ranked = sorted(((score, image, box) for image, dets in enumerate(found) for lab, score, box in dets
                     if lab == label), key=lambda d: -d[0])
    gts = [np.array([b for lab, b in boxes if lab == label], np.float64).reshape(-1, 4) for boxes in truth]
    used = [np.zeros(len(g), bool) for g in gts]
    flags = np.zeros(len(ranked), bool)
    for i, (_, image, box) in enumerate(ranked):
        if not len(gts[image]):
            continue
        ious = iou_matrix(np.array([box], np.float64), gts[image])[0]
        ious[used[image]] = -1.0
        best = int(np.argmax(ious))
        if ious[best] >= threshold:
            used[image][best] = True
            flags[i] = True
    return flags, sum(len(g) for g in gts)


def _ap(flags: np.ndarray, total: int) -> float:
    if not total:
        return 0.0
    tp = np.cumsum(flags)
    recall = tp / total
    precision = tp / np.arange(1, len(flags) + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    points = [envelope[np.searchsorted(recall, r, side="left")] if r <= (recall[-1] if len(recall) else -1)
              else 0.0 for r in RECALL_POINTS]
    return float(np.mean(points))


def average_precision(truth: list[list[Truth]], found: list[list[Detection]],
                      threshold: float) -> dict[str, Any]:
    """Per-class AP and their mean (classes without ground truth are left out)."""
    labels = sorted({lab for boxes in truth for lab, _ in boxes})
    per_class = {label: _ap(*_match(truth, found, label, threshold)) for label in labels}
    return {"map": float(np.mean(list(per_class.values()))) if per_class else 0.0, "per_class": per_class}


def coco_map(truth: list[list[Truth]], found: list[list[Detection]]) -> dict[str, Any]:
    """mAP@0.5, mAP@0.75, mAP@0.5:0.95 and per-class AP@0.5."""
    at = {float(t): average_precision(truth, found, float(t)) for t in COCO_THRESHOLDS}
    return {"map50": at[0.5]["map"], "map75": at[0.75]["map"],
            "map50_95": float(np.mean([r["map"] for r in at.values()])),
            "per_class_ap50": at[0.5]["per_class"]}


def precision_recall(truth: list[list[Truth]], found: list[list[Detection]],
                     threshold: float = 0.5) -> dict[str, float]:
    """Precision and recall of exactly the detections given (those at the serving threshold)."""
    labels = sorted({lab for boxes in truth for lab, _ in boxes} | {d[0] for dets in found for d in dets})
    tp = sum(int(_match(truth, found, label, threshold)[0].sum()) for label in labels)
    detections = sum(len(d) for d in found)
    objects = sum(len(t) for t in truth)
    return {"precision": tp / detections if detections else 0.0, "recall": tp / objects if objects else 0.0}
