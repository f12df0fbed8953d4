"""EfficientDet anchors and box coding.

Five feature levels (P3-P7, strides 8-128); at every cell 9 anchors: 3 scales x 3 aspect
ratios, base size ``anchor_scale * stride`` (the ANCHOR_SCALE setting; the paper's 4 suits
COCO objects, captcha glyphs are smaller: :func:`best_anchor_scale` fits it to labelled boxes).
Anchors are ordered level, row, column, anchor, the order in which the model's heads flatten
their outputs. A box is coded against its anchor as
``((cx - acx) / aw, (cy - acy) / ah, log(w / aw), log(h / ah))``.

>>> a = anchors_for(128, 256, 2.5)
>>> a.shape
(6138, 4)
>>> box = np.array([[10.0, 20.0, 50.0, 44.0]])
>>> np.allclose(decode_boxes(encode_boxes(box, a[:1]), a[:1]), box)
True
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

LEVELS = (3, 4, 5, 6, 7)
SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
RATIOS = ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4))  # (width, height) multipliers
ANCHORS_PER_CELL = len(SCALES) * len(RATIOS)
POSITIVE_IOU, NEGATIVE_IOU = 0.5, 0.4
BACKGROUND, IGNORED = -1, -2
MAX_DELTA = float(np.log(1000.0 / 16))  # clip log-size deltas so exp() cannot overflow


def level_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """Feature-map (rows, columns) per level: each 'same'-padded halving rounds up."""
    sizes = []
    h, w = height, width
    for level in range(1, LEVELS[-1] + 1):
        h, w = -(-h // 2), -(-w // 2)
        if level >= LEVELS[0]:
            sizes.append((h, w))
    return sizes


@lru_cache(maxsize=8)
def anchors_for(height: int, width: int, anchor_scale: float) -> np.ndarray:
    """All anchors of a ``height`` x ``width`` input as float32 corners [N, 4] (x1, y1, x2, y2)."""
    out = []
    for level, (rows, cols) in zip(LEVELS, level_sizes(height, width)):
        stride = 2 ** level
        shapes = np.array([(anchor_scale * stride * s * rw, anchor_scale * stride * s * rh)
                           for s in SCALES for rw, rh in RATIOS])
        ys, xs = np.meshgrid((np.arange(rows) + 0.5) * stride, (np.arange(cols) + 0.5) * stride, indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel()], axis=1)[:, None, :]  # [cells, 1, 2]
        half = shapes[None, :, :] / 2
        out.append(np.concatenate([centres - half, centres + half], axis=2).reshape(-1, 4))
    return np.concatenate(out).astype(np.float32)


def _centre_size(boxes: Any) -> tuple[Any, Any, Any, Any]:
    return ((boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2,
            boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1])


def encode_boxes(boxes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Regression targets of ``boxes`` against ``anchors`` (same leading shape)."""
    cx, cy, w, h = _centre_size(boxes)
    acx, acy, aw, ah = _centre_size(anchors)
    return np.stack([(cx - acx) / aw, (cy - acy) / ah, np.log(w / aw), np.log(h / ah)], axis=-1)


def decode_boxes(deltas: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Corners from regression outputs: the inverse of :func:`encode_boxes`."""
    acx, acy, aw, ah = _centre_size(anchors)
    cx, cy = deltas[..., 0] * aw + acx, deltas[..., 1] * ah + acy
    w = np.exp(np.clip(deltas[..., 2], -MAX_DELTA, MAX_DELTA)) * aw
    h = np.exp(np.clip(deltas[..., 3], -MAX_DELTA, MAX_DELTA)) * ah
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``a`` [N, 4] with every box of ``b`` [M, 4]."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def best_anchor_scale(boxes: np.ndarray, height: int, width: int,
                      candidates: tuple[float, ...] = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0)) -> float:
    """The candidate anchor scale under which most ``boxes`` (corners in model-input pixels)
    have an anchor at IoU >= POSITIVE_IOU; ties go to more such anchors per box."""
    def fit(scale: float) -> tuple[float, float]:
        matches = iou_matrix(boxes, anchors_for(height, width, scale)) >= POSITIVE_IOU
        return float(matches.any(axis=1).mean()), float(matches.sum(axis=1).mean())

    return max(candidates, key=fit)


def target_encoder(height: int, width: int, anchor_scale: float) -> Any:
    """A TensorFlow function (boxes [M, 4], class ids [M]) -> targets [N, 5] for tf.data.

    Columns 0-3 are the coded box of the matched object, column 4 its class id, or BACKGROUND
    (best IoU below NEGATIVE_IOU) or IGNORED (in between). Every object also claims its best
    anchor, so small glyphs always have a positive.
    """
    import tensorflow as tf

    anchors = tf.constant(anchors_for(height, width, anchor_scale))
    a_cx, a_cy = (anchors[:, 0] + anchors[:, 2]) / 2, (anchors[:, 1] + anchors[:, 3]) / 2
    a_w, a_h = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    count = anchors.shape[0]

    def encode(boxes: Any, classes: Any) -> Any:
        real = tf.shape(tf.reshape(boxes, [-1, 4]))[0]
        # A far-away dummy object of class BACKGROUND keeps every gather valid with no objects.
        boxes = tf.concat([tf.reshape(tf.cast(boxes, tf.float32), [-1, 4]),
                           tf.constant([[-1e4, -1e4, -1e4 + 1, -1e4 + 1]])], 0)
        classes = tf.concat([tf.cast(classes, tf.float32), [float(BACKGROUND)]], 0)
        x1 = tf.maximum(anchors[:, None, 0], boxes[None, :, 0])
        y1 = tf.maximum(anchors[:, None, 1], boxes[None, :, 1])
        x2 = tf.minimum(anchors[:, None, 2], boxes[None, :, 2])
        y2 = tf.minimum(anchors[:, None, 3], boxes[None, :, 3])
        inter = tf.nn.relu(x2 - x1) * tf.nn.relu(y2 - y1)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        iou = inter / tf.maximum((a_w * a_h)[:, None] + area[None, :] - inter, 1e-9)  # [N, M + 1]
        best_iou = tf.reduce_max(iou, axis=1)
        matched = tf.argmax(iou, axis=1, output_type=tf.int32)
        # each real object's own best anchor is positive whatever its IoU
        best_anchor = tf.argmax(iou[:, :real], axis=0, output_type=tf.int32)[:, None]
        forced = tf.scatter_nd(best_anchor, tf.ones([real], tf.int32), [count]) > 0
        matched = tf.tensor_scatter_nd_update(matched, best_anchor, tf.range(real))
        state = tf.where(tf.logical_or(best_iou >= POSITIVE_IOU, forced), tf.gather(classes, matched),
                         tf.where(best_iou < NEGATIVE_IOU, float(BACKGROUND), float(IGNORED)))
        target = tf.gather(boxes, matched)
        t_cx, t_cy = (target[:, 0] + target[:, 2]) / 2, (target[:, 1] + target[:, 3]) / 2
        t_w = tf.maximum(target[:, 2] - target[:, 0], 1e-3)
        t_h = tf.maximum(target[:, 3] - target[:, 1], 1e-3)
        coded = tf.stack([(t_cx - a_cx) / a_w, (t_cy - a_cy) / a_h, tf.math.log(t_w / a_w),
                          tf.math.log(t_h / a_h)], axis=1)
        return tf.concat([coded, state[:, None]], axis=1)

    return encode
