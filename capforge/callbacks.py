"""The training callbacks, in the order train.py runs them: BackupAndRestore (a killed run
resumes with its epoch, optimizer state and log), a moving average of the weights
(WEIGHT_AVERAGE) that everything after it sees, the mode's score on the whole validation set
(``val_seq_acc``; ``val_map50`` for detection), the best checkpoint, early stopping, the
learning-rate schedule, TensorBoard, the CSV log and the wall-time limit.

Imported by ``train`` when training starts: this module imports Keras (and so TensorFlow).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Mapping

import keras
import numpy as np
import tensorflow as tf

from capforge.errors import SettingsError
from capforge.modes import Mode
from capforge.weight_average import weight_average_callback

BUDGET_HOLD = 0.6  # share of a --minutes budget trained at the full learning rate


def lr_schedule(settings: Mapping[str, Any], minutes: float | None) -> str:
    """'budget' or 'plateau', resolving LR_SCHEDULE = 'auto' by whether there is a time budget."""
    schedule = settings["LR_SCHEDULE"]
    if schedule == "budget" and not minutes:
        raise SettingsError("LR_SCHEDULE = 'budget' needs a time budget: run train.py --minutes N "
                            "(or set LR_SCHEDULE = 'plateau')")
    return schedule if schedule != "auto" else "budget" if minutes else "plateau"


class ValidationScore(keras.callbacks.Callback):
    """The mode's score on the whole validation set (exact-sequence accuracy, or mAP@0.5),
    logged as ``mode.monitor`` before the callbacks that read it."""

    def __init__(self, mode: Mode, val: tuple[Any, ...]) -> None:
        super().__init__()
        self.mode, self.val = mode, val

    def on_train_begin(self, logs: dict | None = None) -> None:
        # A traced call of the model itself: inside a mirrored strategy's fit, predict_on_batch
        # answered 8 images with 16 rows (once per replica); called eagerly, the recurrent
        # layers run op by op, several times slower (bench/results/defaults.md).
        self.forward = tf.function(lambda batch: self.model(batch, training=False), reduce_retracing=True)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs[self.mode.monitor] = self.mode.validation_score(lambda batch: np.asarray(self.forward(batch)),
                                                                 *self.val)


class TimeLimit(keras.callbacks.Callback):
    """Stop once ``minutes`` of wall time have passed (the epoch is closed normally)."""

    def __init__(self, minutes: float | None) -> None:
        super().__init__()
        self.deadline = time.monotonic() + 60 * minutes if minutes else None

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.deadline and time.monotonic() > self.deadline:
            self.model.stop_training = True


class BudgetSchedule(keras.callbacks.Callback):
    """LR for the first BUDGET_HOLD of the --minutes budget (CTC needs full steps to leave its
    all-blank plateau), then a cosine down to 1 % of it, so a time-bounded run ends on small,
    precise steps instead of wherever a plateau left it."""

    def __init__(self, lr: float, minutes: float) -> None:
        super().__init__()
        self.lr, self.minutes = lr, minutes
        self.started, self.epoch_decayed = time.monotonic(), False

    def decay(self) -> float:
        """How far the decay has gone: 0 during the hold, 1 at the end of the budget."""
        spent = (time.monotonic() - self.started) / (60 * self.minutes)
        return min(1.0, max(0.0, (spent - BUDGET_HOLD) / (1 - BUDGET_HOLD)))

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.started = time.monotonic()
        self.epoch_decayed = False

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_decayed = self.decay() > 0  # the whole epoch trains at a decaying rate

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        cosine = 0.5 * (1 + math.cos(math.pi * self.decay()))
        self.model.optimizer.learning_rate = self.lr * (0.01 + 0.99 * cosine)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:  # the CSV log and TensorBoard show the rate, as with the plateau schedule
            logs["learning_rate"] = float(np.asarray(self.model.optimizer.learning_rate))


def settled(budget: BudgetSchedule | None) -> bool:
    """Whether this epoch trained wholly after the full-rate phase: always without a budget."""
    return budget is None or budget.epoch_decayed


class BestCheckpoint(keras.callbacks.ModelCheckpoint):
    """The best validation score, among settled epochs only: under a budget each epoch at the
    full rate just replaces the last (a lucky epoch there generalises worse than the decayed
    weights), and from the decay on a later epoch wins ties."""

    def __init__(self, path: Path, monitor: str, budget: BudgetSchedule | None) -> None:
        super().__init__(str(path), monitor=monitor, mode="max", save_best_only=True)
        self.budget = budget

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not settled(self.budget):
            self.best = None
        elif self.budget is not None:
            self.monitor_op = np.greater_equal
        super().on_epoch_end(epoch, logs)


class EarlyStop(keras.callbacks.Callback):
    """Stop after ``patience`` epochs in which neither the score rose nor the validation loss
    fell: a CTC model on its all-blank plateau scores 0 for many epochs while its loss still
    falls. Only without a budget: a --minutes run always finishes its decay, since the small
    steps at its end are where a flat validation score still turns into test accuracy
    (figures: bench/results/defaults.md, "Photo classes")."""

    def __init__(self, monitor: str, patience: int) -> None:
        super().__init__()
        self.monitor, self.patience = monitor, patience

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.best_score, self.best_loss, self.wait = -math.inf, math.inf, 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        score, loss = logs.get(self.monitor, -math.inf), logs.get("val_loss", math.inf)
        improved = score > self.best_score or loss < self.best_loss
        self.best_score, self.best_loss = max(score, self.best_score), min(loss, self.best_loss)
        self.wait = 0 if improved else self.wait + 1
        if self.wait >= self.patience:
            self.model.stop_training = True


class EpochLine(keras.callbacks.Callback):
    """One line per epoch (its time and logged figures), for output that is not a terminal:
    Keras' progress bar writes a line per step there."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        figures = ", ".join(f"{name} {value:.4g}" for name, value in (logs or {}).items())
        print(f"epoch {epoch + 1}: {time.monotonic() - self.started:.1f} s, {figures}", flush=True)


def training_callbacks(checkpoints: Path, logs: Path, best: Path, settings: Mapping[str, Any], mode: Mode,
                       val: tuple[Any, ...], minutes: float | None) -> list[Any]:
    """Every callback of a training run, in the order they must run."""
    budget = BudgetSchedule(settings["LR"], minutes) if lr_schedule(settings, minutes) == "budget" else None
    averaging = [weight_average_callback(settings["WEIGHT_AVERAGE"])] if settings["WEIGHT_AVERAGE"] else []
    return [  # in this order: the backup keeps the raw weights, the rest see the average
        keras.callbacks.BackupAndRestore(str(checkpoints / "backup")),
        *averaging,
        ValidationScore(mode, val),
        BestCheckpoint(best, mode.monitor, budget),
        *([] if budget else [EarlyStop(mode.monitor, settings["EARLY_PATIENCE"])]),
        budget or keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                                    patience=settings["LR_PATIENCE"], min_lr=1e-6),
        keras.callbacks.TensorBoard(str(logs / "tensorboard")),
        keras.callbacks.CSVLogger(str(logs / "training.csv"), append=True),
        TimeLimit(minutes),
    ]
