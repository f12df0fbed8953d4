"""CTC_TINY: a compact CTC model for CPUs with a maximum length.

Same loss and decoding as CTC; the recurrent layers are replaced by two cheap 1-D
convolutions over the width, and its default backbone is ``tiny_cnn`` (``small_cnn`` with a
third to two fifths of the filters). It answers in less than half of CTC's time and trains
more epochs in a budget, at nearly CTC's accuracy (bench/results/defaults.md).
"""

from __future__ import annotations

from typing import Any

from capforge.modes.ctc import HEAD, CTCMode


class CTCTinyMode(CTCMode):
    name = "CTC_TINY"
    length_capped = True  # the compact model keeps a maximum length, CAPTCHA_LENGTH
    defaults = {"BACKBONE": "tiny_cnn"}  # the narrow CNN
    options = tuple(o for o in CTCMode.options if o is not HEAD)  # its own head, below

    def head(self, features: Any) -> Any:
        from keras import layers

        x = self.sequence(features)
        x = layers.Dense(96, activation="relu")(x)
        x = layers.Conv1D(96, 3, padding="same", activation="relu")(x)
        x = layers.Dropout(0.2)(x)
        x = layers.Conv1D(96, 3, padding="same", activation="relu")(x)
        return layers.Dense(self.charset.size, activation="softmax", name="probs")(x)
