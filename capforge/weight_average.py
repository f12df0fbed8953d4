"""An exponential moving average of the weights (Polyak averaging) for validation and checkpoints.

Training keeps stepping the raw weights; validation, the checkpoints, early stopping and the
final model see their average over recent steps, which is steadier than the last step's weights.
Keras' own ``use_ema`` averages only trainable weights and starts at full momentum, so a run of
a few dozen steps would be judged on weights close to their random start; this average includes
the batch-normalisation statistics and warms up as ``tf.train.ExponentialMovingAverage`` does
with ``num_updates``: momentum ``min(m, (1 + t) / (10 + t))`` at step t.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np


def warm_momentum(momentum: float, step: int) -> float:
    """The momentum used at ``step``.

    >>> warm_momentum(0.998, 0), round(warm_momentum(0.998, 90), 3), warm_momentum(0.998, 10**6)
    (0.1, 0.91, 0.998)
    """
    return min(momentum, (1 + step) / (10 + step))


def weight_average_callback(momentum: float) -> Any:
    """A Keras callback that averages the model's floating-point weights after every step.

    Place it before the callbacks that judge or save the model at the end of an epoch; a backup
    saves the raw weights training resumes from inside ``holding_raw``.
    """
    import keras
    import tensorflow as tf

    class WeightAverage(keras.callbacks.Callback):
        def on_train_begin(self, logs: dict | None = None) -> None:
            self.weights = [w for w in self.model.weights if "float" in str(w.dtype)]
            self.averages = [tf.Variable(np.asarray(w.value), trainable=False) for w in self.weights]
            self.step = 0
            self.raw: list[np.ndarray] | None = None

            @tf.function
            def update(m: Any) -> None:
                for average, weight in zip(self.averages, self.weights):
                    average.assign(m * average + (1.0 - m) * tf.cast(weight.value, average.dtype))

            self.update = update

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.update(tf.constant(warm_momentum(momentum, self.step), tf.float32))  # a tensor: one trace
            self.step += 1

        # Validation and each epoch's end (the score, checkpoint and early stop) see the average,
        # which stays in the model after the last epoch; every step starts from the raw weights.
        def on_test_begin(self, logs: dict | None = None) -> None:
            self._use_average()

        def on_test_end(self, logs: dict | None = None) -> None:
            self._use_raw()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self._use_average()

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._use_raw()

        def _use_average(self) -> None:
            if self.raw is None:
                self.raw = [np.asarray(w.value) for w in self.weights]
                for weight, average in zip(self.weights, self.averages):
                    weight.assign(average.value())

        def _use_raw(self) -> None:
            if self.raw is not None:
                for weight, value in zip(self.weights, self.raw):
                    weight.assign(value)
                self.raw = None

        @contextlib.contextmanager
        def holding_raw(self) -> Iterator[None]:
            """The raw weights in the model for a while (a backup must keep what training
            resumes from), the average again afterwards."""
            averaged = self.raw is not None
            self._use_raw()
            try:
                yield
            finally:
                if averaged:
                    self._use_average()

        def state(self) -> tuple[int, list[np.ndarray]]:
            """The step count and the averages: what a resumed run goes on from."""
            return self.step, [np.asarray(a.value()) for a in self.averages]

        def restore(self, step: int, averages: list[np.ndarray]) -> None:
            self.step = step
            for average, value in zip(self.averages, averages):
                average.assign(value)

    return WeightAverage()
