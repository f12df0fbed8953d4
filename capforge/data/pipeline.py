"""The tf.data input pipeline: packed TFRecords -> (image, padded label ids).

Label text becomes ids here, through a lookup table built from the Mode's charset; examples
the mode cannot learn (unknown symbols, too long) are filtered out and counted beforehand.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from capforge.modes import Mode
from capforge.workspace import Workspace


def _parse_fn(manifest: Mapping[str, Any], boxes: bool = False) -> Any:
    """record -> (uint8 image, label text), or (image, boxes [M, 4], class names [M])."""
    import tensorflow as tf

    p = manifest["preprocessing"]
    shape = (p["height"], p["width"], p["channels"])
    spec = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.string)}
    if boxes:
        spec |= {"boxes": tf.io.VarLenFeature(tf.float32), "classes": tf.io.VarLenFeature(tf.string)}

    def parse(record: Any) -> tuple[Any, ...]:
        example = tf.io.parse_single_example(record, spec)
        image = tf.reshape(tf.io.decode_raw(example["image"], tf.uint8), shape)
        if not boxes:
            return image, example["label"]
        return (image, tf.reshape(tf.sparse.to_dense(example["boxes"]), [-1, 4]),
                tf.sparse.to_dense(example["classes"]))

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


def _records(workspace: Workspace, manifest: Mapping[str, Any], split: str, training: bool, seed: int) -> Any:
    """The split's serialized examples, shuffled when training."""
    import tensorflow as tf

    files = [str(workspace.packed / name) for name in manifest["splits"][split]["shards"]]
    ds = tf.data.TFRecordDataset(files, compression_type=manifest["compression"] or None,
                                 num_parallel_reads=tf.data.AUTOTUNE)
    if training:
        ds = ds.shuffle(min(20000, manifest["splits"][split]["count"]) or 1, seed=seed,
                        reshuffle_each_iteration=True)
    return ds


def _batched(ds: Any, batch_size: int, count: int) -> Any:
    """Batch and prefetch; under a distribution strategy every replica gets a share."""
    import tensorflow as tf

    ds = ds.apply(tf.data.experimental.assert_cardinality(count))  # lets Keras count steps
    # Replicas of a distribution strategy each need a share of every batch: drop a ragged last
    # batch (the monitored validation score, which checkpoints follow, still sees every image).
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1:
        batch_size = min(batch_size, max(replicas, count - count % replicas))
    return ds.batch(batch_size, drop_remainder=replicas > 1).prefetch(tf.data.AUTOTUNE)


def make_dataset(workspace: Workspace, manifest: Mapping[str, Any], split: str, mode: Mode,
                 batch_size: int, training: bool, augment: bool = False, seed: int = 0) -> Any:
    """Batches of (float32 images in [0, 1], int32 label ids) from one packed split."""
    import tensorflow as tf

    if mode.feature_kind == "detection":
        from capforge.data.detection_pipeline import detection_dataset

        ds, count = detection_dataset(_records(workspace, manifest, split, training, seed),
                                      _parse_fn(manifest, boxes=True), manifest, split, mode, training and augment)
        return _batched(ds, batch_size, count)
    ds = _records(workspace, manifest, split, training, seed)
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
    if training and augment:
        ds = ds.map(augmented, num_parallel_calls=tf.data.AUTOTUNE)
    return _batched(ds, batch_size, sum(mode.accepts(label) for label in manifest["splits"][split]["labels"]))


def load_arrays(workspace: Workspace, manifest: Mapping[str, Any], split: str,
                mode: Mode) -> tuple[np.ndarray, list[Any], list[np.ndarray]]:
    """All images (uint8), labels and (detection) boxes of a packed split that ``mode`` can learn.

    Labels are texts, or for detection lists of class names matching the boxes [M, 4].
    """
    detection = mode.feature_kind == "detection"
    images, labels, boxes = [], [], []
    for item in _records(workspace, manifest, split, False, 0).map(_parse_fn(manifest, detection)):
        image, *rest = (x.numpy() for x in item)
        label = [c.decode("utf-8") for c in rest[-1]] if detection else rest[0].decode("utf-8")
        if mode.accepts(label):
            images.append(image)
            labels.append(label)
            boxes.append(rest[0] if detection else np.zeros((0, 4), np.float32))
    p = manifest["preprocessing"]
    empty = np.zeros((0, p["height"], p["width"], p["channels"]), np.uint8)
    return (np.stack(images) if images else empty), labels, boxes
