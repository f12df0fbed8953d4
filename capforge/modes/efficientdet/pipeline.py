"""tf.data for EFFICIENTDET: packed images and boxes -> (image, anchor targets).

Augmentation suits captchas: a random scale (0.75-1.25) and shift of the whole picture with
its boxes (edges repeated, no flips: glyphs are not symmetric), and brightness, contrast,
saturation and hue jitter. Objects whose centre leaves the picture are dropped, the rest
clipped to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from capforge.data.records import charset_table
from capforge.modes.efficientdet.anchors import target_encoder

if TYPE_CHECKING:  # only for annotations
    from capforge.modes.base import Mode

SCALE_RANGE = (0.75, 1.25)
SHIFT = 0.1  # of the image size, beyond what keeps the scaled picture inside


def _jitter_geometry(image: Any, boxes: Any, classes: Any) -> tuple[Any, Any, Any]:
    import tensorflow as tf

    height, width = float(image.shape[0]), float(image.shape[1])
    scale = tf.random.uniform([], *SCALE_RANGE)

    def offset(size: float) -> Any:
        spare = size - scale * size  # room left (> 0) or overflow (< 0) after scaling
        low, high = tf.minimum(0.0, spare) - SHIFT * size, tf.maximum(0.0, spare) + SHIFT * size
        return tf.random.uniform([], low, high)

    tx, ty = offset(width), offset(height)
    # output pixel (x, y) reads input ((x - tx) / scale, (y - ty) / scale)
    transform = tf.stack([1 / scale, 0.0, -tx / scale, 0.0, 1 / scale, -ty / scale, 0.0, 0.0])[None]
    image = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform, output_shape=tf.constant([int(height), int(width)]),
        fill_value=0.0, interpolation="BILINEAR", fill_mode="NEAREST")[0]
    boxes = boxes * scale + tf.stack([tx, ty, tx, ty])
    centre_x, centre_y = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    inside = (centre_x > 0) & (centre_x < width) & (centre_y > 0) & (centre_y < height)
    boxes = tf.clip_by_value(tf.boolean_mask(boxes, inside), 0.0, tf.constant([width, height, width, height]))
    return image, boxes, tf.boolean_mask(classes, inside)


def _jitter_colour(image: Any) -> Any:
    import tensorflow as tf

    image = tf.image.random_brightness(image, 0.15)
    image = tf.image.random_contrast(image, 0.7, 1.3)
    if image.shape[-1] == 3:
        image = tf.image.random_saturation(image, 0.7, 1.3)
        image = tf.image.random_hue(image, 0.05)
    return tf.clip_by_value(image, 0.0, 1.0)


def detection_dataset(records: Any, parse: Any, manifest: Mapping[str, Any], split: str, mode: Mode,
                      augment: bool) -> tuple[Any, int]:
    """Unbatched (float32 image in [0, 1], targets [anchors, 5]) and how many examples."""
    import tensorflow as tf

    p = manifest["preprocessing"]
    encode = target_encoder(p["height"], p["width"], mode.anchor_scale)
    table = charset_table(mode)

    def to_ids(image: Any, boxes: Any, names: Any) -> tuple[Any, Any, Any]:
        return tf.cast(image, tf.float32) / 255.0, boxes, table.lookup(names)

    def known(image: Any, boxes: Any, ids: Any) -> Any:
        return tf.reduce_all(ids >= 0)

    def augmented(image: Any, boxes: Any, ids: Any) -> tuple[Any, Any, Any]:
        image, boxes, ids = _jitter_geometry(image, boxes, ids)
        return _jitter_colour(image), boxes, ids

    def targets(image: Any, boxes: Any, ids: Any) -> tuple[Any, Any]:
        return image, encode(boxes, ids)

    ds = records.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(to_ids, num_parallel_calls=tf.data.AUTOTUNE).filter(known)
    if augment:
        ds = ds.map(augmented, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(targets, num_parallel_calls=tf.data.AUTOTUNE)
    return ds, sum(mode.accepts(label) for label in manifest["splits"][split]["labels"])
