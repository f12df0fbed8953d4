"""The reference contenders of bench/realsets.py: a plain CRNN (text) and a plain CNN classifier
(photo tiles), written here, independent of capforge's package, so capforge's defaults are
measured against a fixed, ordinary baseline.

CRNN: four 3x3 convolution + batch-norm + ReLU blocks (32, 64, 128, 128 filters), max-pooling
(2,2), (2,2), (2,1), (2,1), one bidirectional GRU of 128, a dense layer to charset + blank, CTC
loss, Adam 1e-3, batch 64, greyscale stretched to 48 x 128 (wide images: 48 x the median aspect,
at most 384). Classifier: the same four blocks on colour 96 x 96, global average pooling, softmax.
Batch normalisation uses momentum 0.9 (PyTorch's default): with Keras' 0.99 the moving statistics
of a 5-minute run had not settled, and the model answered every test image with blanks.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

HEIGHT, WIDTH, MAX_WIDTH, TILE = 48, 128, 384, 96


def load_image(path: Path, size: tuple[int, int], colour: bool) -> np.ndarray:
    """``path`` stretched to ``size`` (width, height), transparency on white, in [0, 1]."""
    image = Image.open(path)
    image.load()
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    image = image.convert("RGB" if colour else "L").resize(size, Image.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return array if colour else array[..., None]


def text_input_width(paths: list[Path]) -> int:
    """128, or 48 x the median aspect ratio for wide images (at most 384), a multiple of 4."""
    aspects = []
    for path in paths[:500]:
        with Image.open(path) as image:
            aspects.append(image.width / image.height)
    wide = HEIGHT * statistics.median(aspects)
    return int(min(MAX_WIDTH, max(WIDTH, 4 * round(wide / 4))))


def _blocks(inputs: Any) -> Any:
    from keras import layers

    x = inputs
    for filters, pool in zip((32, 64, 128, 128), ((2, 2), (2, 2), (2, 1), (2, 1))):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.ReLU()(layers.BatchNormalization(momentum=0.9)(x))
        x = layers.MaxPooling2D(pool)(x)
    return x


def crnn(height: int, width: int, classes: int) -> Any:
    """Logits [B, width / 4, classes + 1]; index 0 is the CTC blank."""
    import keras
    from keras import layers

    inputs = keras.Input((height, width, 1))
    x = _blocks(inputs)
    x = layers.Reshape((x.shape[2], x.shape[1] * x.shape[3]))(layers.Permute((2, 1, 3))(x))
    x = layers.Bidirectional(layers.GRU(128, return_sequences=True))(x)
    return keras.Model(inputs, layers.Dense(classes + 1)(x))


def classifier(classes: int) -> Any:
    import keras
    from keras import layers

    inputs = keras.Input((TILE, TILE, 3))
    x = layers.GlobalAveragePooling2D()(_blocks(inputs))
    return keras.Model(inputs, layers.Dense(classes, activation="softmax")(x))


def ctc_loss(y_true: Any, y_pred: Any) -> Any:
    import keras

    y_true = keras.ops.cast(y_true, "int32")
    target_length = keras.ops.sum(keras.ops.cast(keras.ops.not_equal(y_true, 0), "int32"), -1)
    steps = keras.ops.full((keras.ops.shape(y_pred)[0],), keras.ops.shape(y_pred)[1], dtype="int32")
    return keras.ops.ctc_loss(y_true, y_pred, target_length, steps, mask_index=0)


def greedy(logits: np.ndarray, symbols: list[str]) -> list[str]:
    """Best class per step, repeats merged, blanks dropped."""
    out = []
    for row in logits.argmax(-1):
        text, previous = [], 0
        for i in row:
            if i and i != previous:
                text.append(symbols[i - 1])
            previous = i
        out.append("".join(text))
    return out


@dataclass
class Result:
    predictions: list[str]
    epochs: int
    minutes: float
    ms_per_image: float


def _fit(model: Any, loss: Any, x: np.ndarray, y: np.ndarray, minutes: float, seed: int) -> tuple[int, float]:
    """Adam 1e-3, batch 64, until ``minutes`` of wall time have passed; (epochs, minutes)."""
    import keras
    import tensorflow as tf

    class Budget(keras.callbacks.Callback):
        def on_train_begin(self, logs: dict | None = None) -> None:
            self.started, self.epochs = time.monotonic(), 0

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if time.monotonic() - self.started > 60 * minutes:
                self.model.stop_training = True

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.epochs = epoch + 1

    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed).batch(64).prefetch(2)
    budget = Budget()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    model.fit(data, epochs=100_000, verbose=2, callbacks=[budget])
    return budget.epochs, (time.monotonic() - budget.started) / 60


def _timed(model: Any, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Outputs for ``x`` in batches of 64, and the median ms of a traced call on one image."""
    import tensorflow as tf

    forward = tf.function(lambda batch: model(batch, training=False))
    outputs = np.concatenate([np.asarray(forward(x[i:i + 64])) for i in range(0, len(x), 64)])
    one = x[:1]
    forward(one)
    timings = []
    for _ in range(50):
        started = time.perf_counter()
        np.asarray(forward(one))
        timings.append((time.perf_counter() - started) * 1000)
    return outputs, float(np.median(timings))


def train_text(train: list[tuple[Path, str]], test: list[Path], minutes: float, seed: int) -> Result:
    """Train the CRNN on ``train`` for ``minutes``; read ``test``."""
    import keras

    keras.utils.set_random_seed(seed)
    width = text_input_width([p for p, _ in train])
    symbols = sorted({c for _, label in train for c in label})
    index = {s: i + 1 for i, s in enumerate(symbols)}
    longest = max(len(label) for _, label in train)
    x = np.stack([load_image(p, (width, HEIGHT), False) for p, _ in train])
    y = np.zeros((len(train), longest), dtype=np.int32)
    for row, (_, label) in enumerate(train):
        y[row, :len(label)] = [index[c] for c in label]
    model = crnn(HEIGHT, width, len(symbols))
    epochs, spent = _fit(model, ctc_loss, x, y, minutes, seed)
    logits, ms = _timed(model, np.stack([load_image(p, (width, HEIGHT), False) for p in test]))
    return Result(greedy(logits, symbols), epochs, spent, ms)


def train_tiles(train: list[tuple[Path, str]], test: list[Path], minutes: float, seed: int) -> Result:
    """Train the classifier on ``train`` for ``minutes``; read ``test``."""
    import keras

    keras.utils.set_random_seed(seed)
    classes = sorted({label for _, label in train})
    x = np.stack([load_image(p, (TILE, TILE), True) for p, _ in train])
    y = np.array([classes.index(label) for _, label in train], dtype=np.int32)
    model = classifier(len(classes))
    epochs, spent = _fit(model, "sparse_categorical_crossentropy", x, y, minutes, seed)
    probs, ms = _timed(model, np.stack([load_image(p, (TILE, TILE), True) for p in test]))
    return Result([classes[i] for i in probs.argmax(-1)], epochs, spent, ms)


TRAINERS: dict[str, Callable[..., Result]] = {"text": train_text, "tiles": train_tiles}
