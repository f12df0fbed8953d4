"""Temperature scaling: make answer confidences match how often answers are right.

A model trained on augmented images, or for few epochs, is often underconfident (answers at
confidence 0.35 right 92 % of the time) or overconfident. At export, one temperature T is
fitted on the validation images: every softmax output p becomes softmax(log(p) / T), T chosen
from a grid to minimise the log loss between each answer's confidence and whether it was right.
The most likely symbol at every step is unchanged, so greedy answers keep their text; only
the confidences move. T is stored in the export's manifest and applied by the predictor.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from capforge.modes import Mode

GRID = np.geomspace(0.1, 4.0, 25)  # T < 1 sharpens, T > 1 softens
MIN_IMAGES = 50  # fewer validation images than this: too few to fit, T stays 1


def tempered(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(probs) / temperature) over the last axis.

    >>> tempered(np.array([0.6, 0.3, 0.1]), 0.5).round(3).tolist()
    [0.783, 0.196, 0.022]
    """
    if temperature == 1.0:
        return probs
    logits = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=-1, keepdims=True)


def log_loss(confidences: np.ndarray, correct: np.ndarray) -> float:
    """Mean binary cross-entropy of confidences against right (1) / wrong (0)."""
    c = np.clip(confidences, 1e-6, 1 - 1e-6)
    return float(-np.mean(correct * np.log(c) + (1 - correct) * np.log(1 - c)))


def fit_temperature(mode: Mode, probs: np.ndarray, labels: Sequence[str]) -> dict[str, float | int]:
    """The temperature that calibrates ``mode``'s answers on ``probs`` (the model's outputs for
    images labelled ``labels``), with the log loss before and after; T = 1 for modes that are
    not ``calibrated`` and when there are fewer than MIN_IMAGES images."""
    result: dict[str, float | int] = {"temperature": 1.0, "images": len(labels)}
    if not mode.calibrated or len(labels) < MIN_IMAGES:
        return result
    correct = np.array([a.text == t for a, t in zip(mode.decode(probs), labels)], dtype=float)

    def loss(temperature: float) -> float:
        return log_loss(np.array([a.confidence for a in mode.decode(tempered(probs, temperature))]), correct)

    losses = [loss(t) for t in GRID]
    best = int(np.argmin(losses))
    return {**result, "temperature": round(float(GRID[best]), 4), "log_loss_before": round(loss(1.0), 5),
            "log_loss_after": round(losses[best], 5)}
