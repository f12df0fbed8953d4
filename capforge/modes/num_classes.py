"""NUM_CLASSES: whole-image classification; returns the top-k classes with probabilities."""

from __future__ import annotations

import statistics
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from capforge.data.records import ZOOM
from capforge.modes.base import Mode, Prediction, round8
from capforge.options import TRAIN, Option

TOP_K = 5
MIXUP_ALPHA = 0.4  # photo classes: each image takes a Beta(a, a) share of another (mixup)
VIEW_CROP = (1 + ZOOM) / 2  # the served centre crop: the share of each side an average training crop keeps


class NumClassesMode(Mode):
    name = "NUM_CLASSES"
    learns_unlabelled = True
    uses_blank = False
    feature_kind = "classes"
    length_capped = False
    colour_matters = True
    labels_by_folder = True
    reads_crops = True
    options = (Option("PHOTO_AUGMENT", False, bool, "with DATA_ENHANCEMENT, also mirror, zoom and blend (mixup) "
                      "whole-image classes (photos look the same mirrored; text does not), and answer with the "
                      "mean of the whole photo, its centre crop and both mirrored; check_file.py suggests it for "
                      "colour photo tiles", TRAIN),)

    @classmethod
    def tokens(cls, label: str) -> list[str]:
        return [label]  # the whole label is one class

    @classmethod
    def suggest_input(cls, sizes: Sequence[tuple[int, int]], lengths: Mapping[int, int],
                      colourful: bool) -> tuple[dict[str, Any], str]:
        """The images' own shape (32-96 high), and colour with photo augmentation (mirror, zoom, mixup)
        when the images are colourful."""
        heights, widths = [h for _, h in sizes], [w for w, _ in sizes]
        height = round8(statistics.median(heights), 32, 96)
        width = round8(height * statistics.median(w / h for w, h in sizes), 32, 192)
        out: dict[str, Any] = {"IMAGE_HEIGHT": height, "IMAGE_WIDTH": width, "IMAGE_CHANNELS": 3 if colourful else 1}
        if colourful:
            out["PHOTO_AUGMENT"] = True
        reason = (f"whole-image classes: the images' median shape ({statistics.median(widths):g}x"
                  f"{statistics.median(heights):g}) within 32-96 pixels high; "
                  + ("colour kept and photo augmentation (mirror, zoom, mixup) on: the images are colourful photos"
                     if colourful else "greyscale: the images hold little colour"))
        return out, reason

    def tf_tokens(self, labels: Any) -> Any:
        import tensorflow as tf  # lazily: the server decodes without TensorFlow

        return tf.RaggedTensor.from_tensor(tf.reshape(labels, [-1, 1]))

    @classmethod
    def label_width_for(cls, settings: Mapping[str, Any], labels: Sequence[str]) -> int:
        return 1  # one class per image

    def head(self, features: Any) -> Any:
        from keras import layers

        x = layers.GlobalAveragePooling2D()(features)
        x = layers.Dropout(0.3)(x)
        return layers.Dense(self.charset.size, activation="softmax", name="probs")(x)

    def blend(self, images: Any, ids: Any) -> tuple[Any, Any]:
        """Mixup: each photo blended with another of the batch, its target the same blend of
        both one-hot classes: a few photos per class are otherwise learnt by heart within a
        minute (figures: bench/results/defaults.md, "Photo classes")."""
        import tensorflow as tf

        batch = tf.shape(images)[0]
        a, b = tf.random.gamma([batch], MIXUP_ALPHA), tf.random.gamma([batch], MIXUP_ALPHA)
        share = tf.math.divide_no_nan(a, a + b)  # Beta(alpha, alpha)
        partner = tf.random.shuffle(tf.range(batch))
        one_hot = tf.one_hot(ids[:, 0], self.charset.size)
        mixed = share[:, None, None, None] * images + (1 - share[:, None, None, None]) * tf.gather(images, partner)
        return mixed, share[:, None] * one_hot + (1 - share[:, None]) * tf.gather(one_hot, partner)

    def served(self, model: Any) -> Any:
        """A model trained on mirrored, zoomed photos (PHOTO_AUGMENT) answers with the mean of its
        outputs for four views from that training: the whole photo, its centre crop at the mean
        training zoom, and both mirrored; a vote of views errs less than one view (figures:
        bench/results/defaults.md, "Photo classes answered from four views")."""
        if not (self.settings.get("PHOTO_AUGMENT") and self.settings.get("DATA_ENHANCEMENT")):
            return model
        import keras
        from keras import layers

        height, width = model.inputs[0].shape[1:3]
        image = keras.Input(model.inputs[0].shape[1:], name="image")
        margins = [side - round(side * VIEW_CROP) for side in (height, width)]
        crop = layers.Resizing(height, width)(layers.Cropping2D([(m // 2, m - m // 2) for m in margins])(image))
        views = [image, crop, keras.ops.flip(image, axis=2), keras.ops.flip(crop, axis=2)]
        votes = [model(view, training=False) for view in views]  # inference only: no dropout in the export
        return keras.Model(image, layers.Average()(votes), name=f"{model.name}_four_views")

    def loss(self) -> Callable[[Any, Any], Any]:
        import keras

        size, smoothing = self.charset.size, self.settings["LABEL_SMOOTHING"]

        def class_loss(y_true: Any, y_pred: Any) -> Any:
            blended = size > 1 and y_true.shape[-1] == size  # targets from blend(), not class ids
            target = y_true if blended else keras.ops.one_hot(keras.ops.cast(y_true[:, 0], "int32"), size)
            return keras.losses.categorical_crossentropy(target, y_pred, label_smoothing=smoothing)

        return class_loss

    def decode(self, probs: np.ndarray) -> list[Prediction]:
        out = []
        for row in probs:
            order = np.argsort(-row)[:TOP_K]
            top = [(self.charset.symbol(i), float(row[i])) for i in order]
            out.append(Prediction(top[0][0], top[0][1], [top[0]], top))
        return out
