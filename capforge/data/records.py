"""The tf.data input pipeline: packed TFRecords -> (image, padded label ids).

Label text becomes ids here, through a lookup table built from the Mode's charset; examples
the mode cannot learn (unknown symbols, too long) are filtered out and counted beforehand.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

if TYPE_CHECKING:  # only for annotations: the modes' own pipelines read records through this module
    from capforge.modes import Mode
    from capforge.workspace import Workspace


SHIFT = 3  # augmentation: pixels an image may move each way
ZOOM = 0.75  # photo augmentation: the smallest share of each side a random crop keeps


def _record_spec() -> dict[str, Any]:
    """The features every packed record has: the preprocessed image bytes and the label text."""
    import tensorflow as tf

    return {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.string)}


def charset_table(mode: Mode) -> Any:
    """A lookup table: symbol (or class name) -> its id in ``mode``'s charset, -1 if unknown."""
    import tensorflow as tf

    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(mode.charset.symbols),
                                            tf.constant(mode.charset.ids(), tf.int32)), -1)


def _parse_fn(manifest: Mapping[str, Any], boxes: bool = False) -> Any:
    """record -> (uint8 image, label text), or (image, boxes [M, 4], class names [M])."""
    import tensorflow as tf

    p = manifest["preprocessing"]
    shape = (p["height"], p["width"], p["channels"])
    spec = _record_spec()
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


def _batch_decoder(manifest: Mapping[str, Any], mode: Mode) -> Any:
    """A batch of records -> (float32 images in [0, 1], int32 label ids padded with the blank (0)).

    Works on whole batches: one parse, decode and lookup per batch rather than per image keeps
    the input pipeline's share of the two cores small.
    """
    import tensorflow as tf

    p = manifest["preprocessing"]
    encode = label_ids(mode)

    def decode(records: Any) -> tuple[Any, Any]:
        example = tf.io.parse_example(records, _record_spec())
        images = tf.reshape(tf.io.decode_raw(example["image"], tf.uint8), (-1, p["height"], p["width"], p["channels"]))
        return tf.cast(images, tf.float32) / 255.0, encode(example["label"])

    return decode


def label_ids(mode: Mode) -> Callable[[Any], Any]:
    """A batch of label texts -> int32 ids [batch, label_width], padded with the blank (0)."""
    import tensorflow as tf

    table = charset_table(mode)
    width = mode.label_width

    def encode(labels: Any) -> Any:
        return tf.ragged.map_flat_values(table.lookup, mode.tf_tokens(labels)).to_tensor(0, shape=[None, width])

    return encode


def _usable_filter(mode: Mode) -> Any:
    """record -> whether ``mode`` can learn its label (known symbols, length 1..label_width)."""
    import tensorflow as tf

    spec = {"label": _record_spec()["label"]}
    table = charset_table(mode)
    width = mode.label_width

    def usable(record: Any) -> Any:
        label = tf.io.parse_single_example(record, spec)["label"]
        tokens = mode.tf_tokens(label[None]).flat_values
        known = tf.reduce_all(table.lookup(tokens) >= 0)
        return tf.logical_and(known, tf.logical_and(tf.size(tokens) > 0, tf.size(tokens) <= width))

    return usable


def _augment(images: Any) -> Any:
    """Mild, glyph-safe augmentation of a batch, drawn per image: brightness, contrast, and a
    translation of up to SHIFT pixels (edges mirrored)."""
    import tensorflow as tf

    batch = tf.shape(images)[0]
    images = images + tf.random.uniform([batch, 1, 1, 1], -0.1, 0.1)
    mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    images = (images - mean) * tf.random.uniform([batch, 1, 1, 1], 0.8, 1.2) + mean
    images = shifted(images, tf.random.uniform([batch, 2], -SHIFT, SHIFT + 1, tf.int32), SHIFT)
    return tf.clip_by_value(images, 0.0, 1.0)


def warped(images: Any, strength: float) -> Any:
    """Each image of a batch turned (up to 4 degrees), sheared (up to 0.15) and scaled along
    each axis (up to 12 %) about its centre, all times ``strength``, drawn per image; edges
    mirrored in. Few labels are learnt by heart without it (AUGMENT_WARP)."""
    import math

    import tensorflow as tf

    batch, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]

    def draw(most: float) -> Any:
        return tf.random.uniform([batch], -most * strength, most * strength)

    angle, shear = draw(4 * math.pi / 180), draw(0.15)
    sx, sy = 1 + draw(0.12), 1 + draw(0.12)
    cos, sin = tf.cos(angle), tf.sin(angle)
    m00, m01, m10, m11 = cos / sx, (cos * shear - sin) / sy, sin / sx, (sin * shear + cos) / sy
    cx, cy = (width - 1) / 2, (height - 1) / 2  # output pixel -> input pixel, about the centre
    transforms = tf.stack([m00, m01, cx - m00 * cx - m01 * cy, m10, m11, cy - m10 * cx - m11 * cy,
                           tf.zeros([batch]), tf.zeros([batch])], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(images=images, transforms=transforms, output_shape=[height, width],
                                                 fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")


def shifted(images: Any, moves: Any, most: int) -> Any:
    """Each image of a batch moved by its own (down, right) pixels in ``moves`` (int [batch, 2],
    each within -``most``..``most``), the uncovered edge mirrored in."""
    import tensorflow as tf

    batch, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [most, most], [most, most], [0, 0]], mode="SYMMETRIC")
    # Each image's window in the padded batch, in crop_and_resize's normalised corners: on whole
    # pixels, so the "resize" copies exact pixels and this is a pure per-image shift.
    top_left = tf.cast(most - moves, tf.float32)
    last = tf.constant([height + 2 * most - 1, width + 2 * most - 1], tf.float32)  # padded's last pixel
    boxes = tf.concat([top_left, top_left + [height - 1, width - 1]], axis=1) / tf.concat([last, last], 0)
    return tf.image.crop_and_resize(padded, boxes, tf.range(batch), [height, width], method="nearest")


def _mirror_and_zoom(images: Any) -> Any:
    """Photo augmentation of a batch, drawn per image: a horizontal mirror for half of them and
    a random crop of ZOOM-100 % of each side, resized back to the input size."""
    import tensorflow as tf

    batch, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    images = tf.where(tf.random.uniform([batch, 1, 1, 1]) < 0.5, tf.reverse(images, [2]), images)
    side = tf.random.uniform([batch, 1], ZOOM, 1.0)
    corner = tf.random.uniform([batch, 2]) * (1.0 - side)
    return tf.image.crop_and_resize(images, tf.concat([corner, corner + side], 1), tf.range(batch), [height, width])


def split_records(workspace: Workspace, manifest: Mapping[str, Any], split: str, training: bool = False,
                  seed: int = 0) -> Any:
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
    """Batch (not yet prefetched); under a distribution strategy every replica gets a share."""
    import tensorflow as tf

    ds = ds.apply(tf.data.experimental.assert_cardinality(count))  # lets Keras count steps
    # Replicas of a distribution strategy each need a share of every batch: drop a ragged last
    # batch (the monitored validation score, which checkpoints follow, still sees every image).
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1:
        batch_size = min(batch_size, max(replicas, count - count % replicas))
    return ds.batch(batch_size, drop_remainder=replicas > 1)


def make_dataset(workspace: Workspace, manifest: Mapping[str, Any], split: str, mode: Mode,
                 batch_size: int, training: bool, augment: bool = False, seed: int = 0,
                 photos: bool = False, extra: Any = None, warp: float = 0.0) -> Any:
    """Prefetched batches of (float32 images in [0, 1], int32 label ids) from one packed split.

    ``augment`` turns on the glyph-safe augmentation; ``photos`` adds mirroring, zooming and the
    mode's blending (``Mode.blend``) for modes whose images may be photos (``Mode.colour_matters``).
    ``warp``: the strength of :func:`warped` on top (0: none).
    ``extra``: an endless dataset of batches of the same kind whose next batch joins each of the
    split's before augmentation (pseudo-labelled images; the shared pipeline only)."""
    import tensorflow as tf

    ds = split_records(workspace, manifest, split, training, seed)
    own = mode.dataset(ds, _parse_fn(manifest, boxes=mode.labels_from_boxes), manifest, split, training and augment)
    if own is not None:  # a mode with its own targets (detection: anchors)
        ds, count = own
        ds = _batched(ds, batch_size, count).map(lambda images, labels: mode.batched(images, labels, training and augment),
                                                 num_parallel_calls=tf.data.AUTOTUNE)
        return _shared_out(ds.prefetch(tf.data.AUTOTUNE))
    labels = manifest["splits"][split]["labels"]
    count = sum(mode.accepts(label) for label in labels)
    if count < len(labels):  # only then pay for a per-record check
        ds = ds.filter(_usable_filter(mode))
    ds = _batched(ds, batch_size, count).map(_batch_decoder(manifest, mode), num_parallel_calls=tf.data.AUTOTUNE)
    if extra is not None:
        batches = ds.cardinality()  # the endless extra would hide it from Keras
        ds = tf.data.Dataset.zip(ds, extra).map(lambda own, more: (tf.concat([own[0], more[0]], 0),
                                                                   tf.concat([own[1], more[1]], 0)))
        ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    if training and augment:
        ds = ds.map(lambda images, ids: (_augment(images), ids), num_parallel_calls=tf.data.AUTOTUNE)
        if warp:
            ds = ds.map(lambda images, ids: (warped(images, warp), ids), num_parallel_calls=tf.data.AUTOTUNE)
        if photos and mode.colour_matters:
            ds = ds.map(lambda images, ids: mode.blend(_mirror_and_zoom(images), ids),
                        num_parallel_calls=tf.data.AUTOTUNE)
    return _shared_out(ds.prefetch(tf.data.AUTOTUNE))


def _shared_out(ds: Any) -> Any:
    """Split by element, not by file, between the machines of DISTRIBUTE='multi_worker': a small
    split may have fewer shard files than there are machines."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def load_arrays(workspace: Workspace, manifest: Mapping[str, Any], split: str,
                mode: Mode) -> tuple[np.ndarray, list[Any], list[np.ndarray]]:
    """All images (uint8), labels and (detection) boxes of a packed split that ``mode`` can learn.

    Labels are texts, or for detection lists of class names matching the boxes [M, 4].
    """
    from tqdm import tqdm

    detection = mode.labels_from_boxes
    images, labels, boxes = [], [], []
    records = split_records(workspace, manifest, split).map(_parse_fn(manifest, detection))
    for item in tqdm(records, desc=f"loading {split}", unit="img", total=manifest["splits"][split]["count"]):
        image, *rest = (x.numpy() for x in item)
        label = [c.decode("utf-8") for c in rest[-1]] if detection else rest[0].decode("utf-8")
        if mode.accepts(label):
            images.append(image)
            labels.append(label)
            boxes.append(rest[0] if detection else np.zeros((0, 4), np.float32))
    p = manifest["preprocessing"]
    empty = np.zeros((0, p["height"], p["width"], p["channels"]), np.uint8)
    return (np.stack(images) if images else empty), labels, boxes


def load_images(workspace: Workspace, manifest: Mapping[str, Any], split: str) -> np.ndarray:
    """Every image (uint8) of a packed split, labels or not (data/unlabelled's split has none)."""
    p = manifest["preprocessing"]
    images = [image.numpy() for image, _ in split_records(workspace, manifest, split).map(_parse_fn(manifest))]
    return np.stack(images) if images else np.zeros((0, p["height"], p["width"], p["channels"]), np.uint8)
