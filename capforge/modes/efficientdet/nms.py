"""Non-max suppression: of boxes that overlap more than a threshold, keep the best scored.

>>> boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], float)
>>> nms(boxes, np.array([0.9, 0.8, 0.7]), 0.5).tolist()
[0, 2]
"""

from __future__ import annotations

import numpy as np

from capforge.modes.efficientdet.anchors import iou_matrix


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, limit: int = 100) -> np.ndarray:
    """Indices of the boxes kept, best score first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < limit:
        best, order = order[0], order[1:]
        keep.append(int(best))
        if order.size:
            order = order[iou_matrix(boxes[best:best + 1], boxes[order])[0] <= iou_threshold]
    return np.array(keep, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float,
                limit: int = 100) -> np.ndarray:
    """NMS within each class: boxes of different classes never suppress each other."""
    if not len(boxes):
        return np.zeros(0, np.int64)
    # Shift each class to its own region of the plane, then one NMS pass does them all.
    shift = (classes.astype(np.float64) * (boxes.max() + 1.0))[:, None]
    return nms(boxes + shift, scores, iou_threshold, limit)
