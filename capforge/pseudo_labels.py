"""Learning from data/unlabelled: pseudo-labels that the weight-averaged model is sure of.

When relabelling is due at an epoch's end, the model (the weight average, which the epoch's end
holds) answers the validation split and every unlabelled image. The confidence from which
PSEUDO_PRECISION of its validation answers are right is the bar: each unlabelled image answered
at least that confidently (and plausibly: a length some training label has) joins the training
batches with its answer as the label, until the next relabelling. Pseudo-labels live in this
process's memory only: never in the pool, the validation or the test split, never on disk as
labels. Relabelling takes at most RELABEL_SHARE of the training time.

Drawn captchas (SYNTHETIC, packed as split ``synthetic``) warm the model up through the same
batches: they are learnt, with their own labels, until the first relabelling at which the model
reads WARMUP_READS of the validation images, and never after. Few labels alone are learnt by
heart (no validation answer ever right); drawn ones make the model read, and the site's own
images (labelled, then pseudo-labelled) take over as soon as it does (bench/results/unlabelled.md).

Imported by ``train`` when training starts: this module imports Keras (and so TensorFlow).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from capforge.data.records import label_ids
from capforge.modes import Mode, Prediction

RELABEL_SHARE = 0.25  # the most of the training time that answering the unlabelled images may take
LEAST_ANSWERS = 10  # validation answers the precision is judged on, at the least
WARMUP_READS = 0.1  # the share of validation images read right that ends the drawn captchas' warm-up


def confidence_bar(confidences: np.ndarray, right: np.ndarray, precision: float) -> float:
    """The lowest confidence above which at least ``precision`` of the answers are right (over at
    least LEAST_ANSWERS of them, or half of a smaller validation split); infinity where no such
    confidence exists.

    >>> confidence_bar(np.array([0.9, 0.8, 0.7, 0.6]), np.array([True, True, False, True]), 0.75)
    0.6
    >>> confidence_bar(np.array([0.9, 0.8]), np.array([False, True]), 0.9)
    inf
    """
    order = np.argsort(-confidences, kind="stable")
    counted = np.arange(1, len(order) + 1)
    good = (np.cumsum(right[order]) / counted >= precision) & (counted >= min(LEAST_ANSWERS, math.ceil(len(order) / 2)))
    if not good.any():
        return math.inf
    return float(confidences[order][np.nonzero(good)[0][-1]])


class PseudoLabels(keras.callbacks.Callback):
    """Answers the unlabelled ``images`` (uint8) at an epoch's end and keeps the confident ones for
    :meth:`batches`; ``val`` is the validation split (uint8 images, labels) the bar is set on. A
    ``teacher`` (a reader with ``predict(images) -> Predictions``, its texts put as labels are by
    ``fold``) gives the first choice when training begins; the model's own answers replace its
    where the model is sure of them. ``drawn``: captchas (uint8 images, labels) learnt until the
    model reads WARMUP_READS of the validation images."""

    def __init__(self, mode: Mode, images: np.ndarray, val: tuple[np.ndarray, Sequence[str]],
                 lengths: Sequence[int] | None, precision: float, seed: int = 0, teacher: Any = None,
                 fold: Callable[[str], str] = str, drawn: tuple[np.ndarray, Sequence[str]] | None = None) -> None:
        super().__init__()
        self.mode, self.val, self.lengths, self.precision = mode, val, lengths, precision
        self.seed, self.draws, self.teacher, self.fold = seed, 0, teacher, fold
        self.unlabelled = len(images)  # the first images; the drawn ones (if any) follow them
        self.images = np.concatenate([images, drawn[0]]) if drawn is not None and len(drawn[0]) else images
        self.taught: dict[int, str] = {}  # the teacher's choice: image index -> pseudo-label
        self.warmup = {self.unlabelled + i: label for i, label in enumerate(drawn[1] if drawn is not None else ())}
        self.chosen: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.int64), np.zeros(0, object))
        self.spent, self.last = 0.0, time.monotonic()

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.forward = tf.function(lambda batch: self.model(batch, training=False), reduce_retracing=True)
        if self.teacher is not None:
            def read(images: np.ndarray) -> list[Any]:
                return [Prediction(self.fold(a.text), a.confidence)
                        for a in self.teacher.predict([Image.fromarray(i.squeeze(-1) if i.shape[-1] == 1 else i)
                                                       for i in images])]
            self.taught = self.choose(read(self.val[0]), read(self.images[:self.unlabelled]), "the teacher's")
        self.keep({**self.warmup, **self.taught})
        self.last = time.monotonic()

    def answers(self, images: np.ndarray) -> list[Any]:
        """The model's answers (mode Predictions) to uint8 ``images``."""
        if not len(images):
            return []
        return self.mode.decode(self.mode.outputs(lambda batch: np.asarray(self.forward(batch)), images))

    def choose(self, checked: list[Any], answers: list[Any], whose: str) -> dict[int, str]:
        """The unlabelled images (index -> answer) answered at least as confidently as the bar that
        ``checked``, the answers to the validation split, sets; plausible and learnable ones only."""
        bar = confidence_bar(np.array([a.confidence for a in checked]),
                             np.array([a.text == label for a, label in zip(checked, self.val[1])]), self.precision)
        kept = {i: a.text for i, a in enumerate(answers) if a.confidence >= bar
                and self.mode.plausible(a.text, self.lengths) and self.mode.accepts(a.text)}
        if answers:
            print(f"pseudo-labels: {len(kept)} of {len(answers)} unlabelled images from {whose} answers with "
                  f"confidence >= {bar:.3f} (where {self.precision:g} of its validation answers are right)", flush=True)
        return kept

    def keep(self, chosen: dict[int, str]) -> None:
        """Train on ``chosen`` from now on (one tuple, swapped whole, for :meth:`batches`)."""
        self.chosen = (np.array(list(chosen), np.int64), np.array([t.encode() for t in chosen.values()], object))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        started = time.monotonic()
        if self.model.stop_training or started - self.last < self.spent * (1 / RELABEL_SHARE - 1):
            return
        checked = self.answers(self.val[0])
        chosen = self.choose(checked, self.answers(self.images[:self.unlabelled]), "the model's")
        reads = float(np.mean([a.text == label for a, label in zip(checked, self.val[1])]))
        if self.warmup and reads >= WARMUP_READS:
            print(f"drawn captchas: no longer learnt from epoch {epoch + 2} (the model reads {reads:.0%} of the "
                  "validation images)", flush=True)
            self.warmup = {}
        self.keep({**self.warmup, **self.taught, **chosen})
        self.last = time.monotonic()
        self.spent = self.last - started
        if logs is not None:
            logs["pseudo_labels"] = len(self.chosen[0])

    def batches(self, size: int) -> Any:
        """An endless dataset of (float32 images, label ids) batches of up to ``size`` pseudo-labelled
        images drawn at random from the latest choice (empty batches before the first)."""
        height, width, channels = self.images.shape[1:]
        encode = label_ids(self.mode)

        def draw() -> Any:
            rng = np.random.default_rng([self.seed, self.draws])  # a new draw each epoch's pass
            self.draws += 1
            while True:
                indices, labels = self.chosen
                picked = rng.integers(0, len(indices), size) if len(indices) else np.zeros(0, np.int64)
                yield self.images[indices[picked]], labels[picked].astype(bytes) if len(picked) else np.zeros(0, bytes)

        ds = tf.data.Dataset.from_generator(draw, output_signature=(
            tf.TensorSpec((None, height, width, channels), tf.uint8), tf.TensorSpec((None,), tf.string)))
        return ds.map(lambda images, labels: (tf.cast(images, tf.float32) / 255.0, encode(labels)))
