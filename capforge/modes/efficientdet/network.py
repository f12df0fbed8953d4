"""EfficientDet (Tan, Pang and Le, 2020): an EfficientNet backbone from keras.applications,
a BiFPN neck with fast normalised fusion, and class and box heads shared across the five
feature levels P3-P7.

``PHI`` picks the size: EfficientNetB<PHI>, BiFPN width and depth, head depth (the paper's
compound scaling; the input size is IMAGE_HEIGHT x IMAGE_WIDTH, since captchas are small).
The model's one output is ``[batch, anchors, 4 + classes]``: box regression (see
``capforge.modes.efficientdet.anchors``) then per-class sigmoid scores. Decoding and NMS happen in
NumPy (``capforge.modes.efficientdet``), so the ONNX export is the network alone.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import layers

from capforge.modes.efficientdet.anchors import ANCHORS_PER_CELL
from capforge.errors import SettingsError
from capforge.models.backbones import efficientnet_body

BIFPN_WIDTH = (64, 88, 112, 160, 224, 288, 384, 384)
BIFPN_DEPTH = (3, 4, 5, 6, 7, 7, 8, 8)
HEAD_DEPTH = (3, 3, 3, 4, 4, 4, 5, 5)
# Backbone outputs at strides 8, 16 and 32; every EfficientNet B0-B7 has these layers.
FEATURE_LAYERS = ("block4a_expand_activation", "block6a_expand_activation", "top_activation")
PRIOR = 0.01  # initial foreground probability (focal loss paper), keeps early training stable
# BatchNorm moving statistics follow 10 % of each batch (Keras' default is 1 %): with the few
# hundred steps a CPU trains for, inference-mode statistics would otherwise lag far behind.
BN_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="capforge")
class WeightedFusion(layers.Layer):
    """Fast normalised fusion: sum of inputs weighted by ReLU(w) / (sum ReLU(w) + eps)."""

    def build(self, input_shape: list[Any]) -> None:
        self.w = self.add_weight(name="w", shape=(len(input_shape),), initializer="ones")

    def call(self, inputs: list[Any]) -> Any:
        w = keras.ops.relu(self.w)
        w = w / (keras.ops.sum(w) + 1e-4)
        return sum(w[i] * x for i, x in enumerate(inputs))


def _resize_to(x: Any, rows: int, cols: int, name: str) -> Any:
    """Nearest upsampling by 2, cropped to a level's size (odd sizes round up going down)."""
    x = layers.UpSampling2D(2, name=f"{name}_up")(x)
    extra = (x.shape[1] - rows, x.shape[2] - cols)
    return layers.Cropping2D(((0, extra[0]), (0, extra[1])), name=f"{name}_crop")(x) if any(extra) else x


def _fuse(inputs: list[Any], width: int, name: str) -> Any:
    x = WeightedFusion(name=f"{name}_fuse")(inputs)
    x = layers.Activation("swish")(x)
    x = layers.SeparableConv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    return layers.BatchNormalization(name=f"{name}_bn")(x)


def _bifpn(features: list[Any], width: int, index: int) -> list[Any]:
    """One BiFPN layer over P3-P7: top-down then bottom-up, with the same-level skip."""
    down = lambda x, n: layers.MaxPooling2D(3, 2, padding="same", name=f"bifpn{index}_{n}_down")(x)  # noqa: E731
    p3, p4, p5, p6, p7 = features
    name = f"bifpn{index}"
    td6 = _fuse([p6, _resize_to(p7, *p6.shape[1:3], f"{name}_td6")], width, f"{name}_td6")
    td5 = _fuse([p5, _resize_to(td6, *p5.shape[1:3], f"{name}_td5")], width, f"{name}_td5")
    td4 = _fuse([p4, _resize_to(td5, *p4.shape[1:3], f"{name}_td4")], width, f"{name}_td4")
    out3 = _fuse([p3, _resize_to(td4, *p3.shape[1:3], f"{name}_out3")], width, f"{name}_out3")
    out4 = _fuse([p4, td4, down(out3, "out4")], width, f"{name}_out4")
    out5 = _fuse([p5, td5, down(out4, "out5")], width, f"{name}_out5")
    out6 = _fuse([p6, td6, down(out5, "out6")], width, f"{name}_out6")
    out7 = _fuse([p7, down(out6, "out7")], width, f"{name}_out7")
    return [out3, out4, out5, out6, out7]


def _head(levels: list[Any], width: int, depth: int, outputs: int, name: str, bias: float) -> Any:
    """A head shared by all levels (BatchNorm per level, as in the paper), flattened to anchors."""
    convs = [layers.SeparableConv2D(width, 3, padding="same", name=f"{name}_conv{i}") for i in range(depth)]
    final = layers.SeparableConv2D(ANCHORS_PER_CELL * outputs, 3, padding="same", name=f"{name}_out",
                                   bias_initializer=keras.initializers.Constant(bias))
    flat = []
    for level, x in enumerate(levels):
        for i, conv in enumerate(convs):
            x = layers.Activation("swish")(layers.BatchNormalization(name=f"{name}_bn{i}_p{level + 3}")(conv(x)))
        flat.append(layers.Reshape((-1, outputs), name=f"{name}_flat_p{level + 3}")(final(x)))
    return layers.Concatenate(axis=1, name=f"{name}_all")(flat)


def build_efficientdet(input_shape: tuple[int, int, int], num_classes: int, phi: int = 0,
                       pretrained: bool = False) -> keras.Model:
    """The EfficientDet-D<phi> network for ``input_shape`` images in [0, 1].

    >>> build_efficientdet((64, 64, 3), 3).output.shape
    (None, 774, 7)
    """
    if not 0 <= phi < len(BIFPN_WIDTH):
        raise SettingsError(f"PHI must be from 0 to {len(BIFPN_WIDTH) - 1}; received {phi}")
    inputs = keras.Input(input_shape, name="image")
    try:
        extractor, x = efficientnet_body(f"EfficientNetB{phi}", inputs, pretrained, FEATURE_LAYERS)
    except (ValueError, OSError) as exc:
        raise SettingsError(f"EfficientNetB{phi} cannot be built for input {input_shape}: {exc}") from None
    c3, c4, c5 = extractor(x)
    width = BIFPN_WIDTH[phi]

    def project(feature: Any, name: str) -> Any:
        x = layers.Conv2D(width, 1, padding="same", use_bias=False, name=f"{name}_proj")(feature)
        return layers.BatchNormalization(name=f"{name}_proj_bn")(x)

    p6 = layers.MaxPooling2D(3, 2, padding="same", name="p6")(project(c5, "p6"))
    p7 = layers.MaxPooling2D(3, 2, padding="same", name="p7")(p6)
    levels = [project(c3, "p3"), project(c4, "p4"), project(c5, "p5"), p6, p7]
    for index in range(BIFPN_DEPTH[phi]):
        levels = _bifpn(levels, width, index)
    depth = HEAD_DEPTH[phi]
    boxes = _head(levels, width, depth, 4, "box", 0.0)
    scores = layers.Activation("sigmoid", name="scores")(
        _head(levels, width, depth, num_classes, "class", -math.log((1 - PRIOR) / PRIOR)))
    outputs = layers.Concatenate(axis=-1, name="detections")([boxes, scores])
    model = keras.Model(inputs, outputs, name=f"efficientdet_d{phi}")
    for layer in _all_layers(model):
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = BN_MOMENTUM
    return model


def _all_layers(model: Any) -> list[Any]:
    """The layers of ``model`` and of the models nested in it."""
    found = []
    for layer in model.layers:
        found.append(layer)
        if hasattr(layer, "layers"):
            found += _all_layers(layer)
    return found
