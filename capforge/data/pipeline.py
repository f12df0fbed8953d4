"""The tf.data input pipeline: packed TFRecords -> (image, padded label ids).

Label text becomes ids here, through a lookup table built from the Mode's charset; examples
the mode cannot learn (unknown symbols, too long) are filtered out and counted beforehand.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from capforge.modes import Mode
from capforge.workspace import Workspace


def _parse_fn(manifest: Mapping[str, Any]) -> Any:
    import tensorflow as tf

    p = manifest["preprocessing"]
    shape = (p["height"], p["width"], p["channels"])
    spec = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.string)}

    def parse(record: Any) -> tuple[Any, Any]:
        example = tf.io.parse_single_example(record, spec)
        image = tf.reshape(tf.io.decode_raw(example["image"], tf.uint8), shape)
        return image, example["label"]

    return parse


def _encoder(mode: Mode) -> Any:
    """label text -> int32 ids padded with the blank (0) to ``mode.label_width``."""
    import tensorflow as tf

    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(mode.charset.symbols),
                                            tf.constant(mode.charset.ids(), tf.int32)), -1)
    width = mode.label_width

    def encode(label: Any) -> Any:
        tokens = tf.reshape(label, [1]) if not mode.uses_blank else tf.strings.unicode_split(label, "UTF-8")
        ids = table.lookup(tokens)
        return tf.pad(ids, [[0, tf.maximum(0, width - tf.shape(ids)[0])]])[:width], ids

    return encode


def _augment(image: Any) -> Any:
    """Mild, glyph-safe augmentation: brightness, contrast, a few pixels of translation."""
    import tensorflow as tf

    height, width = image.shape[0], image.shape[1]
    image = tf.image.random_brightness(image, 0.1)
    image = tf.image.random_contrast(image, 0.8, 1.2)
    padded = tf.pad(image, [[3, 3], [3, 3], [0, 0]], mode="SYMMETRIC")
    image = tf.image.random_crop(padded, [height, width, image.shape[2]])
    return tf.clip_by_value(image, 0.0, 1.0)


def make_dataset(workspace: Workspace, manifest: Mapping[str, Any], split: str, mode: Mode,
                 batch_size: int, training: bool, augment: bool = False, seed: int = 0) -> Any:
    """Batches of (float32 images in [0, 1], int32 label ids) from one packed split."""
    import tensorflow as tf

    files = [str(workspace.packed / name) for name in manifest["splits"][split]["shards"]]
    ds = tf.data.TFRecordDataset(files, compression_type=manifest["compression"] or None,
                                 num_parallel_reads=tf.data.AUTOTUNE)
    if training:
        ds = ds.shuffle(min(20000, manifest["splits"][split]["count"]) or 1, seed=seed,
                        reshuffle_each_iteration=True)
    encode = _encoder(mode)
    width = mode.label_width

    def to_example(image: Any, label: Any) -> tuple[Any, Any, Any]:
        padded, ids = encode(label)
        ok = tf.logical_and(tf.reduce_all(ids >= 0),
                            tf.logical_and(tf.size(ids) > 0, tf.size(ids) <= width))
        return tf.cast(image, tf.float32) / 255.0, padded, ok

    def usable(image: Any, ids: Any, ok: Any) -> Any:
        return ok

    def drop_flag(image: Any, ids: Any, ok: Any) -> tuple[Any, Any]:
        return image, ids

    def augmented(image: Any, ids: Any) -> tuple[Any, Any]:
        return _augment(image), ids

    ds = ds.map(_parse_fn(manifest), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.filter(usable).map(drop_flag)
    count = sum(mode.accepts(label) for label in manifest["splits"][split]["labels"])
    ds = ds.apply(tf.data.experimental.assert_cardinality(count))  # lets Keras count steps
    if training and augment:
        ds = ds.map(augmented, num_parallel_calls=tf.data.AUTOTUNE)
    # Replicas of a distribution strategy each need a share of every batch: drop a ragged last
    # batch (val_seq_acc, which checkpoints follow, still sees every validation image).
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1:
        batch_size = min(batch_size, max(replicas, count - count % replicas))
    ds = ds.batch(batch_size, drop_remainder=replicas > 1)
    return ds.prefetch(tf.data.AUTOTUNE)


def load_arrays(workspace: Workspace, manifest: Mapping[str, Any], split: str,
                mode: Mode) -> tuple[np.ndarray, list[str]]:
    """All images (uint8) and label texts of a packed split that ``mode`` can learn."""
    import tensorflow as tf

    files = [str(workspace.packed / name) for name in manifest["splits"][split]["shards"]]
    ds = tf.data.TFRecordDataset(files, compression_type=manifest["compression"] or None)
    images, labels = [], []
    for image, label in ds.map(_parse_fn(manifest)).batch(512).as_numpy_iterator():
        for one, text in zip(image, label):
            text = text.decode("utf-8")
            if mode.accepts(text):
                images.append(one)
                labels.append(text)
    p = manifest["preprocessing"]
    empty = np.zeros((0, p["height"], p["width"], p["channels"]), np.uint8)
    return (np.stack(images) if images else empty), labels
