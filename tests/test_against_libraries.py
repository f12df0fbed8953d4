"""What capforge writes by hand (the server runs without TensorFlow) agrees with the library that
has it, on many random cases: NMS with ``tf.image.non_max_suppression``, CTC beam search with
``tf.nn.ctc_beam_search_decoder``, COCO mAP with pycocotools, the weight average with
``tf.train.ExponentialMovingAverage``, the promotion gate's McNemar test with scipy."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from capforge.modes.ctc import ctc_prefix_beams
from capforge.modes.efficientdet.anchors import iou_matrix
from capforge.modes.efficientdet.metrics import coco_map
from capforge.modes.efficientdet.nms import batched_nms, nms
from capforge.retrain import mcnemar_p

RANDOM = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEEDS = st.integers(0, 2**32 - 1)


def random_boxes(rng: np.random.Generator, count: int, extent: float = 100.0) -> np.ndarray:
    """``count`` boxes (x1, y1, x2, y2) crowded enough to overlap often."""
    corner = rng.uniform(0, extent, (count, 2))
    size = rng.uniform(2, extent / 2, (count, 2))
    return np.concatenate([corner, corner + size], 1)


def clear_of(boxes: np.ndarray, threshold: float) -> bool:
    """No pair's IoU lies so near ``threshold`` that rounding could decide it."""
    return not np.any(np.abs(iou_matrix(boxes, boxes) - threshold) < 1e-5)


@RANDOM
@given(seed=SEEDS, count=st.integers(0, 40), threshold=st.floats(0.1, 0.9), limit=st.integers(1, 50))
def test_nms_keeps_what_tensorflow_keeps(seed: int, count: int, threshold: float, limit: int) -> None:
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    boxes, scores = random_boxes(rng, count), rng.permutation(count) / max(count, 1) + 0.01  # no ties
    assume(clear_of(boxes, threshold))
    theirs = tf.image.non_max_suppression(boxes[:, [1, 0, 3, 2]].astype(np.float32), scores.astype(np.float32),
                                          limit, iou_threshold=threshold).numpy()
    assert nms(boxes, scores, threshold, limit).tolist() == theirs.tolist()


@RANDOM
@given(seed=SEEDS, count=st.integers(0, 40), classes=st.integers(1, 4), threshold=st.floats(0.1, 0.9),
       limit=st.integers(1, 50))
def test_per_class_nms_keeps_what_tensorflow_keeps_class_by_class(seed: int, count: int, classes: int,
                                                                   threshold: float, limit: int) -> None:
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    boxes, scores = random_boxes(rng, count), rng.permutation(count) / max(count, 1) + 0.01
    labels = rng.integers(0, classes, count)
    assume(clear_of(boxes, threshold))
    kept = []
    for label in range(classes):
        members = np.flatnonzero(labels == label)
        chosen = tf.image.non_max_suppression(boxes[members][:, [1, 0, 3, 2]].astype(np.float32),
                                              scores[members].astype(np.float32), count, threshold).numpy()
        kept += members[chosen].tolist()
    theirs = sorted(kept, key=lambda i: -scores[i])[:limit]
    assert batched_nms(boxes, scores, labels, threshold, limit).tolist() == theirs


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, steps=st.integers(1, 6), symbols=st.integers(1, 3), sharpness=st.floats(0.5, 4.0))
def test_beam_search_finds_what_tensorflow_finds(seed: int, steps: int, symbols: int, sharpness: float) -> None:
    """With a beam wide enough to hold every prefix both searches are exact: the same texts in
    the same order, with the same probabilities (TensorFlow puts the blank last; capforge first)."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    logits = rng.normal(0, sharpness, (steps, symbols + 1))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    width = sum((symbols) ** n for n in range(steps + 1))
    ours = [(text, p) for text, p in ctc_prefix_beams(probs, blank=0, beam_width=width) if p > 0]  # spellable
    top = min(len(ours), 5)
    tf_probs = np.concatenate([probs[:, 1:], probs[:, :1]], 1)[:, None, :]  # [time, batch, classes]
    decoded, log_p = tf.nn.ctc_beam_search_decoder(np.log(tf_probs).astype(np.float32), [steps],
                                                   beam_width=width, top_paths=top)
    theirs = [([int(s) + 1 for s in tf.sparse.to_dense(d).numpy()[0]], float(np.exp(lp)))
              for d, lp in zip(decoded, log_p.numpy()[0])]
    gaps = np.diff([p for _, p in ours[:top + 1]])
    assume(np.all(np.abs(gaps) > 1e-4))  # no two texts equally likely: either order would be right
    for (text, p), (their_text, their_p) in zip(ours[:top], theirs):
        assert text == their_text
        assert p == pytest.approx(their_p, rel=1e-3)


def ordered(box: np.ndarray) -> np.ndarray:
    """The box with its corners in order (x1 <= x2, y1 <= y2), as a detector answers."""
    return np.concatenate([np.minimum(box[:2], box[2:]), np.maximum(box[:2], box[2:])])


def coco_format(truth: list, found: list, names: list[str]) -> tuple[dict, list]:
    """capforge's (label, box) lists as a COCO ground-truth dict and result list."""
    def xywh(box: np.ndarray) -> list[float]:
        return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]

    annotations = [{"id": len_ + 1, "image_id": image, "category_id": names.index(label) + 1, "iscrowd": 0,
                    "bbox": xywh(box), "area": xywh(box)[2] * xywh(box)[3]}
                   for len_, (image, label, box) in enumerate(
                       (image, label, box) for image, boxes in enumerate(truth) for label, box in boxes)]
    gt = {"images": [{"id": i} for i in range(len(truth))], "annotations": annotations,
          "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)]}
    results = [{"image_id": image, "category_id": names.index(label) + 1, "bbox": xywh(box), "score": score}
               for image, dets in enumerate(found) for label, score, box in dets]
    return gt, results


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=SEEDS, images=st.integers(1, 5), classes=st.integers(1, 3))
def test_map_is_what_pycocotools_computes(seed: int, images: int, classes: int) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(seed)
    names = [f"c{k}" for k in range(classes)]
    truth, found = [], []
    for _ in range(images):
        gt_boxes = random_boxes(rng, int(rng.integers(0, 6)))
        truth.append([(names[rng.integers(classes)], box) for box in gt_boxes])
        near = [ordered(box + rng.normal(0, 4, 4)) for box in gt_boxes if rng.random() < 0.8]  # found, roughly
        stray = list(random_boxes(rng, int(rng.integers(0, 4))))  # and some false alarms
        found.append([(names[rng.integers(classes)] if rng.random() < 0.2 else None, box) for box in near + stray])
    found = [[(label or truth[i][k][0] if k < len(truth[i]) else label or names[0], box)
              for k, (label, box) in enumerate(dets)] for i, dets in enumerate(found)]
    scores = iter(rng.permutation(sum(map(len, found))) / 1000 + 0.001)  # distinct: no ties
    found = [[(label, float(next(scores)), box) for label, box in dets] for dets in found]
    assume(any(truth))
    pairs = [np.array(box) for boxes in truth for _, box in boxes] + [np.array(b) for d in found for *_, b in d]
    every = np.array(pairs)
    ious = iou_matrix(every, every)
    assume(not np.any(np.abs(ious[..., None] - np.arange(0.5, 0.96, 0.05)) < 1e-6))
    gt, results = coco_format(truth, found, names)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluation = COCOeval(coco, coco.loadRes(results) if results else COCO(), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    ours = coco_map(truth, found)
    assert ours["map50_95"] == pytest.approx(max(evaluation.stats[0], 0.0), abs=1e-9)
    assert ours["map50"] == pytest.approx(max(evaluation.stats[1], 0.0), abs=1e-9)
    assert ours["map75"] == pytest.approx(max(evaluation.stats[2], 0.0), abs=1e-9)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=SEEDS, momentum=st.sampled_from([0.5, 0.9, 0.99]), batches=st.integers(1, 30))
def test_weight_average_is_tensorflows_moving_average(seed: int, momentum: float, batches: int) -> None:
    """After training, the model holds the average ``tf.train.ExponentialMovingAverage`` (with
    ``num_updates``, its warm-up) computes from the raw weights of every step."""
    import keras
    import tensorflow as tf

    from capforge.weight_average import weight_average_callback

    keras.utils.set_random_seed(seed % 2**31)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.BatchNormalization(),
                              keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    start = [np.array(w.value) for w in model.weights]
    steps: list[list[np.ndarray]] = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            steps.append([np.array(w.value) for w in self.model.weights])

    rng = np.random.default_rng(seed)
    model.fit(rng.normal(size=(batches * 4, 3)), rng.normal(size=(batches * 4, 1)), batch_size=4, epochs=1,
              verbose=0, shuffle=False, callbacks=[Record(), weight_average_callback(momentum)])
    updates = tf.Variable(0, dtype=tf.int64)
    average = tf.train.ExponentialMovingAverage(momentum, num_updates=updates)
    variables = [tf.Variable(w) for w in start]
    average.apply(variables)  # the shadows start at the initial weights
    for step, weights in enumerate(steps):
        for variable, value in zip(variables, weights):
            variable.assign(value)
        updates.assign(step)
        average.apply(variables)
    for weight, variable in zip(model.weights, variables):
        np.testing.assert_allclose(np.array(weight.value), average.average(variable).numpy(), rtol=1e-5, atol=1e-6)


@settings(deadline=None)
@given(more=st.integers(0, 60), fewer=st.integers(0, 60))
def test_mcnemar_is_scipys_exact_binomial_test(more: int, fewer: int) -> None:
    from scipy.stats import binomtest

    expected = binomtest(more, more + fewer, 0.5, alternative="greater").pvalue if more + fewer else 1.0
    assert mcnemar_p(more, fewer) == pytest.approx(expected, rel=1e-9)
