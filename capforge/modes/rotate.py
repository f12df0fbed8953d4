"""ROTATE: the angle that turns a picture upright (rotate captchas: "drag to turn the picture").

The label of a captcha is that angle in degrees, 0-360, in the direction ROTATE_DIRECTION names
(``<angle>_<anything>.png``). The model answers a distribution over ROTATE_BINS equal angle bins;
the answer is the circular mean of the bins around the likeliest one, its confidence the
probability those bins hold.

It learns without labelled captchas: training turns every picture by a fresh random angle each
time it is seen (its label moving with it) and crops it the way the site does (ROTATE_CROP), so
a folder of upright pictures (``gen_sample_by_captcha.py --source FOLDER``) is enough, and
labelled captchas from the site train the same way.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from capforge.data.generate import FORMATS, encode
from capforge.data.pictures import check_source, pick_picture
from capforge.errors import DataError
from capforge.modes.base import Prediction
from capforge.modes.measured import MeasuredMode, number
from capforge.options import DATA, SERVE, TRAIN, Option

NEIGHBOURS = 2  # bins each side of the likeliest that the answer's mean and confidence take in
ANGLE = r"(360(\.0+)?|(3[0-5][0-9]|[12]?[0-9]?[0-9])(\.[0-9]+)?)"  # 0-360, as labels write it
APART = 15.0  # degrees between the answer and each other candidate angle
SOFT_BINS = 1.0  # training targets: a circular Gaussian of this many bins around the true angle


def circle_mask(size: int) -> Image.Image:
    """An 'L' mask of the disc a round rotate captcha shows, ``size`` pixels across."""
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).ellipse((0, 0, size - 1, size - 1), fill=255)
    return mask


def turned(picture: Image.Image, angle: float, size: int, crop: str, fill: tuple[int, int, int],
           rng: random.Random | None = None) -> Image.Image:
    """``picture`` turned counter-clockwise by ``angle`` degrees and cropped as a site shows it:
    the centred square that stays covered at every angle, ``size`` pixels, and for 'circle' the
    disc inside it on ``fill``. With ``rng``, the square is 85-100 % of the short side, anywhere
    in the picture (sites crop their pictures differently; no two captchas repeat)."""
    square = min(picture.size)
    left, top = (picture.width - square) // 2, (picture.height - square) // 2
    if rng is not None:
        square = round(square * rng.uniform(0.85, 1.0))
        left, top = rng.randint(0, picture.width - square), rng.randint(0, picture.height - square)
    picture = picture.convert("RGB").crop((left, top, left + square, top + square))
    rotated = picture.rotate(angle, resample=Image.BICUBIC)
    inner = square / math.sqrt(2) if crop == "square" else square  # a square must stay covered when turned
    margin = (square - inner) / 2
    out = rotated.crop((round(margin), round(margin), round(square - margin), round(square - margin)))
    out = out.resize((size, size), Image.BICUBIC)
    if crop == "circle":
        out = Image.composite(out, Image.new("RGB", (size, size), fill), circle_mask(size))
    return out


@dataclass(frozen=True)
class RotateSpec:
    """Rotate captchas to generate: pictures from ``source`` (else drawn ones), each turned by a
    random angle and cropped as ``crop`` says, ``size`` pixels square, named ``<angle>_<n>``."""

    size: int = 152
    crop: str = "circle"
    source: Path | None = None
    fmt: str = "png"
    direction: str = "clockwise"

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise DataError(f"unknown image format {self.fmt!r}; allowed: {', '.join(FORMATS)}")
        check_source(self.source, "upright pictures")

    def _plan(self, seed: int, index: int) -> tuple[random.Random, int]:
        rng = random.Random(f"{seed}-{index}")
        return rng, rng.randrange(360)

    def file_names(self, seed: int, index: int) -> list[str]:
        return [f"{self._plan(seed, index)[1]}_{seed}-{index:06d}.{self.fmt}"]

    def files(self, seed: int, index: int) -> list[tuple[str, bytes]]:
        rng, angle = self._plan(seed, index)
        picture = pick_picture(self.source, rng, self.size * 2)
        counter_clockwise = angle if self.direction == "clockwise" else -angle  # the label undoes the turn
        image = turned(picture, counter_clockwise, self.size, self.crop, (255, 255, 255), rng)
        return [(self.file_names(seed, index)[0], encode(image, self.fmt))]


class RotateMode(MeasuredMode):
    name = "ROTATE"
    feature_kind = "classes"
    monitor = "val_angle_score"
    defaults = {"IMAGE_HEIGHT": 96, "IMAGE_WIDTH": 96, "IMAGE_CHANNELS": 3, "RESIZE": "stretch",
                "BATCH_SIZE": 32}
    options = (
        Option("ROTATE_DIRECTION", "clockwise", str, "which way the labels' and answers' angles turn the "
               "picture upright", SERVE, choices=("clockwise", "counterclockwise")),
        Option("ROTATE_CROP", "circle", str, "how the site shows the turned picture: 'circle' (a disc, the "
               "corners blank) or 'square' (the square that stays covered at every angle); training turns "
               "pictures and crops them the same way", DATA, choices=("circle", "square")),
        Option("ROTATE_BINS", 120, int, "angle bins the model answers over (120: 3 degrees each)", TRAIN,
               minimum=8, maximum=720),
    )
    measure = ("degrees", (5.0, 10.0))  # the test report: mean error, and the share within each
    answer_fields = {
        "angle": "degrees to turn the picture to make it upright, 0-360, in ROTATE_DIRECTION",
        "direction": "ROTATE_DIRECTION: which way 'angle' turns",
        "candidates": "other likely angles, best first, each with its probability",
    }

    @classmethod
    def symbols_for(cls, settings: Mapping[str, Any], labels: Sequence[str]) -> list[str]:
        """The bins' centres in degrees: what the model's outputs stand for."""
        step = 360 / settings["ROTATE_BINS"]
        return [f"{i * step:g}" for i in range(settings["ROTATE_BINS"])]

    @classmethod
    def suggest_input(cls, sizes: Sequence[tuple[int, int]], lengths: Mapping[int, int],
                      colourful: bool) -> tuple[dict[str, Any], str]:
        side = statistics.median(min(size) for size in sizes)
        chosen = int(min(160, max(64, 16 * round(min(96, side) / 16))))
        return ({"IMAGE_HEIGHT": chosen, "IMAGE_WIDTH": chosen, "IMAGE_CHANNELS": 3},
                f"rotate: a square {chosen} pixels of colour (the pictures' median side is {side:g}; more "
                "than 96 costs training time and adds little to the angle)")

    @classmethod
    def sample_spec(cls, settings: Mapping[str, Any], charset: str, lengths: tuple[int, int] | None,
                    width: int | None, height: int | None, image_format: str, source: Path | None = None) -> Any:
        return RotateSpec(width or height or 152, settings["ROTATE_CROP"], source, image_format,
                          settings["ROTATE_DIRECTION"])

    @classmethod
    def label_problem(cls, label: str, settings: Mapping[str, Any], allowed: set[str] | None,
                      size: tuple[int, int] | None = None) -> tuple[str, str] | None:
        angle = number(label)
        if angle is None or not 0 <= angle <= 360:
            return "out_of_range", (f"label {label!r} is not an angle: ROTATE labels are degrees from 0 to 360 "
                                    "('35_anything.png')")
        return None

    def within(self, value: float) -> bool:
        return value <= 360

    def dataset(self, records: Any, parse: Callable[[Any], Any], manifest: Mapping[str, Any], split: str,
                augment: bool) -> tuple[Any, int] | None:
        """(uint8 image, angle); ``batched`` turns them and makes the targets."""
        import tensorflow as tf

        def example(record: Any) -> tuple[Any, Any]:
            image, label = parse(record)
            return image, tf.strings.to_number(label, tf.float32)

        records, usable = self.learnable(records, parse, manifest["splits"][split]["labels"], ANGLE)
        return records.map(example, num_parallel_calls=tf.data.AUTOTUNE), usable

    def batched(self, images: Any, angles: Any, augment: bool) -> tuple[Any, Any]:
        """(images in [0, 1], soft targets over the bins). When training (``augment``), each
        picture is turned by a fresh random angle, then cut as ROTATE_CROP says, its angle moved
        with it. (Mirroring half of them, their angle negated, gained nothing in 10 minutes:
        bench/results/measured.md.)"""
        import tensorflow as tf

        images = tf.cast(images, tf.float32) / 255.0
        if augment:
            batch, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
            extra = tf.random.uniform([batch], 0.0, 360.0)
            images = turn(images, extra)
            sign = 1.0 if self.settings["ROTATE_DIRECTION"] == "clockwise" else -1.0
            angles = angles + sign * extra
            if self.settings["ROTATE_CROP"] == "circle":  # the corners turned in are blank on the site: make them so
                yy, xx = tf.meshgrid(tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32),
                                     indexing="ij")
                radius = (min(height, width) - 1) / 2
                disc = tf.cast((yy - (height - 1) / 2) ** 2 + (xx - (width - 1) / 2) ** 2 <= radius ** 2,
                               tf.float32)[None, ..., None]
                images = images * disc + (1.0 - disc)
            images = images * tf.random.uniform([batch, 1, 1, 1], 0.8, 1.2) + tf.random.uniform([batch, 1, 1, 1], -0.1, 0.1)
            images = tf.clip_by_value(images, 0.0, 1.0)
        return images, soft_target(angles, self.charset.size)

    def head(self, features: Any) -> Any:
        """Where things are decides the angle (sky above, ground below), so the map is kept
        whole: a 1x1 reduction, flattened, rather than pooled away."""
        from keras import layers

        x = layers.Conv2D(48, 1, activation="relu", name="reduce")(features)
        x = layers.Flatten()(x)
        x = layers.Dropout(0.3)(x)
        x = layers.Dense(256, activation="relu")(x)
        return layers.Dense(self.charset.size, activation="softmax", name="probs")(x)

    def loss(self) -> Callable[[Any, Any], Any]:
        import keras

        return keras.losses.CategoricalCrossentropy()

    def angles(self, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The answered angle (degrees) and its confidence for each row of bin probabilities."""
        bins = probs.shape[-1]
        best = probs.argmax(-1)
        offsets = np.arange(-NEIGHBOURS, NEIGHBOURS + 1)
        near = (best[:, None] + offsets[None]) % bins
        weights = np.take_along_axis(probs, near, axis=1)
        theta = near * (2 * np.pi / bins)
        mean = np.arctan2((weights * np.sin(theta)).sum(1), (weights * np.cos(theta)).sum(1))
        return np.degrees(mean) % 360, np.clip(weights.sum(1), 0.0, 1.0)

    def decode(self, probs: np.ndarray) -> list[Prediction]:
        probs = probs.reshape(len(probs), -1)
        angles, confidence = self.angles(probs)
        step = 360 / probs.shape[-1]
        out = []
        for row, angle, conf in zip(probs, angles, confidence):
            others: list[int] = []  # the likeliest bins at least APART degrees from the answer and each other
            for i in (int(i) for i in np.argsort(-row)):
                if len(others) == 3:
                    break
                if all(angle_error(i * step, a) >= APART for a in [float(angle), *(j * step for j in others)]):
                    others.append(i)
            text = f"{angle:.1f}"
            out.append(Prediction(text, float(conf), [(text, float(conf))], fields={
                "angle": round(float(angle), 2), "direction": self.settings["ROTATE_DIRECTION"],
                "candidates": [{"angle": round(i * step, 2), "probability": round(float(row[i]), 6)} for i in others]}))
        return out

    def validation_score(self, predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                         labels: Sequence[Any], boxes: Sequence[np.ndarray] = ()) -> float:
        """1 - mean absolute angle error / 180: 1 when every angle is right, 0.5 for guessing."""
        if not len(labels):
            return 0.0
        outputs = self.outputs(predict, images)
        got, _ = self.angles(outputs.reshape(len(outputs), -1))
        return 1.0 - float(np.mean([angle_error(a, float(t)) for a, t in zip(got, labels)])) / 180.0

    def error(self, prediction: Prediction, label: str) -> float | None:
        angle = number(label)
        return None if angle is None else angle_error(prediction.fields["angle"], angle)


def angle_error(answer: float, truth: float) -> float:
    """The smaller turn between two angles, in degrees (0-180)."""
    difference = abs(answer - truth) % 360
    return min(difference, 360 - difference)


def soft_target(angles: Any, bins: int) -> Any:
    """Training targets for a batch of ``angles`` in degrees (a tensor [batch]): a circular
    Gaussian over the bins around each."""
    import tensorflow as tf

    centres = tf.range(bins, dtype=tf.float32) * (360.0 / bins)
    difference = tf.math.floormod(centres[None] - angles[:, None] + 180.0, 360.0) - 180.0
    weights = tf.exp(-0.5 * (difference / (SOFT_BINS * 360.0 / bins)) ** 2)
    return weights / tf.reduce_sum(weights, axis=1, keepdims=True)


def turn(images: Any, degrees: Any) -> Any:
    """A batch of ``images`` each turned counter-clockwise (as it looks) by its ``degrees`` about
    its centre (edges stretched outwards)."""
    import tensorflow as tf

    height, width = images.shape[1], images.shape[2]
    theta = degrees * math.pi / 180.0
    cos, sin = tf.cos(theta), tf.sin(theta)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    zeros = tf.zeros_like(cos)
    # output pixel -> input pixel: the inverse turn about the centre (y points down)
    transforms = tf.stack([cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy, zeros, zeros], 1)
    return tf.raw_ops.ImageProjectiveTransformV3(images=images, transforms=transforms, output_shape=[height, width],
                                                 interpolation="BILINEAR", fill_mode="NEAREST", fill_value=1.0)
