"""The training callbacks, in the order train.py runs them: the clock (training time, across
resumes), a moving average of the weights (WEIGHT_AVERAGE) that everything after it sees, the
mode's score on the whole validation set (``val_seq_acc``; ``val_map50`` for detection), the
best checkpoint, early stopping, the learning-rate schedule, the backup (a killed run resumes
with its epoch, optimizer, log and every callback's state), TensorBoard, the CSV log and the
time limit.

Imported by ``train`` when training starts: this module imports Keras (and so TensorFlow).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import time
from pathlib import Path
from typing import Any, Mapping

import keras
import numpy as np
import tensorflow as tf

from capforge.atomic import write_atomically
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


class Clock(keras.callbacks.Callback):
    """The training time spent, which a resumed run carries on from rather than starting again:
    the --minutes budget and its schedule read it."""

    def __init__(self) -> None:
        super().__init__()
        self.started = time.monotonic()

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.started = time.monotonic()

    def spent(self) -> float:
        """Seconds of training so far, across resumes."""
        return time.monotonic() - self.started

    def state(self) -> dict[str, Any]:
        return {"spent": self.spent()}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.started = time.monotonic() - state["spent"]


class TimeLimit(keras.callbacks.Callback):
    """Stop once ``minutes`` of training time have passed (the epoch is closed normally)."""

    def __init__(self, minutes: float | None, clock: Clock) -> None:
        super().__init__()
        self.minutes, self.clock = minutes, clock

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.minutes and self.clock.spent() > 60 * self.minutes:
            self.model.stop_training = True


class BudgetSchedule(keras.callbacks.Callback):
    """LR for the first BUDGET_HOLD of the --minutes budget (CTC needs full steps to leave its
    all-blank plateau), then a cosine down to 1 % of it, so a time-bounded run ends on small,
    precise steps instead of wherever a plateau left it."""

    def __init__(self, lr: float, minutes: float, clock: Clock) -> None:
        super().__init__()
        self.lr, self.minutes, self.clock = lr, minutes, clock
        self.epoch_decayed = False

    def decay(self) -> float:
        """How far the decay has gone: 0 during the hold, 1 at the end of the budget."""
        spent = self.clock.spent() / (60 * self.minutes)
        return min(1.0, max(0.0, (spent - BUDGET_HOLD) / (1 - BUDGET_HOLD)))

    def on_train_begin(self, logs: dict | None = None) -> None:
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
        self.budget, self.path = budget, path
        # The score of a checkpoint this run saved after its last backup (read before training
        # begins; a fresh run removes a finished run's record as it starts).
        self.recorded = (json.loads(self.record().read_text())["score"]
                         if self.record().is_file() and path.is_file() else None)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not settled(self.budget):
            self.best = None
        elif self.budget is not None:
            self.monitor_op = np.greater_equal
        before = self.best
        super().on_epoch_end(epoch, logs)
        if self.best is not None and self.best is not before:  # saved: its score beside it, at once
            write_atomically(self.record(), json.dumps({"epoch": epoch, "score": float(self.best)}).encode())

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        self.record().unlink(missing_ok=True)  # read in __init__ already, for a resumed run

    def record(self) -> Path:
        """The score of the checkpoint on disk, written right after it (a kill between the
        epoch's end and the backup must not let a worse epoch replace it on resuming)."""
        return self.path.with_suffix(".json")

    def state(self) -> dict[str, Any]:
        return {"best": None if self.best is None else float(self.best)}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.best = max((s for s in (state["best"], self.recorded) if s is not None), default=None)


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

    def state(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_loss": self.best_loss, "wait": self.wait}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.best_score, self.best_loss, self.wait = state["best_score"], state["best_loss"], state["wait"]

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


class Backup(keras.callbacks.BackupAndRestore):
    """Keras' backup of the raw weights, the optimizer and the epoch, plus what the other
    callbacks know (the best score, early-stop patience, the plateau schedule, the time spent,
    the weight average), so that a killed run resumes to what an unkilled one would do. It runs
    after them, saving what the epoch's end left; the state first, the weights last, so a kill
    in between resumes knowing at least as much as the weights it restores."""

    STATE, AVERAGE = "state.json", "average.npz"

    def __init__(self, folder: Path, parts: Mapping[str, Any], averaging: Any | None) -> None:
        super().__init__(str(folder), double_checkpoint=True)
        self.folder, self.parts, self.averaging = folder, parts, averaging
        self.resumed: dict[str, Any] | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        if not (self.folder / self.STATE).is_file():
            return
        self.resumed = json.loads((self.folder / self.STATE).read_text())
        for name, part in self.parts.items():
            if name in self.resumed:
                part.restore(self.resumed[name])
        if self.averaging is not None and (self.folder / self.AVERAGE).is_file():
            with np.load(self.folder / self.AVERAGE) as saved:
                self.averaging.restore(self.resumed["average_step"], [saved[k] for k in sorted(saved, key=int)])
        best = self.parts["best"].best
        print(f"resuming after epoch {self.resumed['epoch']}: {self.resumed['clock']['spent']:.0f} s of training "
              f"spent, best {self.parts['best'].monitor} so far {'none' if best is None else f'{best:.4f}'}",
              flush=True)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        state: dict[str, Any] = {"epoch": epoch + 1, **{name: part.state() for name, part in self.parts.items()}}
        if self.averaging is not None:
            state["average_step"], averages = self.averaging.state()
            buffer = io.BytesIO()
            np.savez(buffer, **{str(i): a for i, a in enumerate(averages)})
            write_atomically(self.folder / self.AVERAGE, buffer.getvalue())
        write_atomically(self.folder / self.STATE, json.dumps(state).encode())
        with self.averaging.holding_raw() if self.averaging is not None else contextlib.nullcontext():
            super().on_epoch_end(epoch, logs)


class Plateau(keras.callbacks.ReduceLROnPlateau):
    """Keras' halving on plateaus, with a state a resumed run restores."""

    def state(self) -> dict[str, Any]:
        return {"best": float(self.best) if self.best is not None else None, "wait": self.wait,
                "cooldown_counter": self.cooldown_counter,
                "learning_rate": float(np.asarray(self.model.optimizer.learning_rate))}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.best, self.wait, self.cooldown_counter = state["best"], state["wait"], state["cooldown_counter"]
        self.model.optimizer.learning_rate = state["learning_rate"]


def training_callbacks(checkpoints: Path, logs: Path, best: Path, settings: Mapping[str, Any], mode: Mode,
                       val: tuple[Any, ...], minutes: float | None) -> list[Any]:
    """Every callback of a training run, in the order they must run."""
    clock = Clock()
    budget = (BudgetSchedule(settings["LR"], minutes, clock) if lr_schedule(settings, minutes) == "budget"
              else None)
    averaging = weight_average_callback(settings["WEIGHT_AVERAGE"]) if settings["WEIGHT_AVERAGE"] else None
    best_checkpoint = BestCheckpoint(best, mode.monitor, budget)
    stop = None if budget else EarlyStop(mode.monitor, settings["EARLY_PATIENCE"])
    schedule = budget or Plateau(monitor="val_loss", factor=0.5, patience=settings["LR_PATIENCE"], min_lr=1e-6)
    parts = {"clock": clock, "best": best_checkpoint, **({"early_stop": stop} if stop else {}),
             **({} if budget else {"plateau": schedule})}
    return [  # in this order: the average is what everything after it sees; the backup saves what
              # the callbacks before it know
        clock,
        *([averaging] if averaging else []),
        ValidationScore(mode, val),
        best_checkpoint,
        *([stop] if stop else []),
        schedule,
        Backup(checkpoints / "backup", parts, averaging),  # before the log: a logged epoch is backed up
        keras.callbacks.TensorBoard(str(logs / "tensorboard")),
        keras.callbacks.CSVLogger(str(logs / "training.csv"), append=True),
        TimeLimit(minutes, clock),
    ]
