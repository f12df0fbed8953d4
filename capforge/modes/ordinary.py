"""ORDINARY: CAPTCHA_LENGTH positions, each a softmax over blank + charset.

Shorter labels are padded with the blank (id 0), which decoding drops.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from capforge.modes.answer_rules import ANSWER
from capforge.modes.base import SYNTHETIC, TEACHER, Mode, Prediction


class OrdinaryMode(Mode):
    name = "ORDINARY"
    learns_unlabelled = True
    reads_crops = True
    feature_kind = "global"
    options = (ANSWER, TEACHER, SYNTHETIC)
    serving_settings = ("ANSWER",)  # a rule changed after export applies when serving, no retraining

    def head(self, features: Any) -> Any:
        from keras import layers

        x = layers.Conv2D(64, 1, activation="relu", name="reduce")(features)
        x = layers.Flatten()(x)
        x = layers.Dropout(0.3)(x)
        x = layers.Dense(256, activation="relu")(x)
        x = layers.Dense(self.label_width * self.charset.size)(x)
        x = layers.Reshape((self.label_width, self.charset.size))(x)
        return layers.Softmax(name="probs")(x)

    def loss(self) -> Callable[[Any, Any], Any]:
        import keras

        size, smoothing = self.charset.size, self.settings["LABEL_SMOOTHING"]

        def ordinary_loss(y_true: Any, y_pred: Any) -> Any:
            target = keras.ops.one_hot(keras.ops.cast(y_true, "int32"), size)
            per_position = keras.losses.categorical_crossentropy(
                target, y_pred, label_smoothing=smoothing)
            return keras.ops.sum(per_position, axis=-1)

        return ordinary_loss

    def decode(self, probs: np.ndarray) -> list[Prediction]:
        ids, best = probs.argmax(-1), probs.max(-1)
        out = []
        for row_ids, row_best in zip(ids, best):
            chars = [(self.charset.symbol(i), float(p)) for i, p in zip(row_ids, row_best)
                     if i != self.charset.blank]
            out.append(Prediction("".join(c for c, _ in chars), float(np.prod(row_best)), chars))
        return out
