"""NUM_CLASSES: whole-image classification; returns the top-k classes with probabilities."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from capforge.modes.base import Mode, Prediction

TOP_K = 5


class NumClassesMode(Mode):
    name = "NUM_CLASSES"
    uses_blank = False
    feature_kind = "global"
    length_capped = False
    colour_matters = True
    labels_by_folder = True
    reads_crops = True

    @classmethod
    def tokens(cls, label: str) -> list[str]:
        return [label]  # the whole label is one class

    @classmethod
    def label_width_for(cls, settings: Mapping[str, Any], labels: Sequence[str]) -> int:
        return 1  # one class per image

    def head(self, features: Any) -> Any:
        from keras import layers

        x = layers.GlobalAveragePooling2D()(features)
        x = layers.Dropout(0.3)(x)
        return layers.Dense(self.charset.size, activation="softmax", name="probs")(x)

    def loss(self) -> Callable[[Any, Any], Any]:
        import keras

        size, smoothing = self.charset.size, self.settings["LABEL_SMOOTHING"]

        def class_loss(y_true: Any, y_pred: Any) -> Any:
            target = keras.ops.one_hot(keras.ops.cast(y_true[:, 0], "int32"), size)
            return keras.losses.categorical_crossentropy(target, y_pred, label_smoothing=smoothing)

        return class_loss

    def decode(self, probs: np.ndarray) -> list[Prediction]:
        out = []
        for row in probs:
            order = np.argsort(-row)[:TOP_K]
            top = [(self.charset.symbol(i), float(row[i])) for i in order]
            out.append(Prediction(top[0][0], top[0][1], [top[0]], top))
        return out
