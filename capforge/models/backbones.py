"""Backbones behind a small registry: ``build_backbone(name, input_shape, kind)``.

Every backbone maps images [B, H, W, C] in [0, 1] to a feature map [B, H', W', C']. For text
read along the width (``kind="sequence"``), ``keras.applications`` networks are cut at their
last layer that keeps at least W/8 columns, so CTC has enough time steps; ``small_cnn`` keeps
W/8 too and is the CPU default (``tiny_cnn``, the same with a third to two fifths of the
filters, is CTC_TINY's).
Whole-image classes (``kind="classes"``) get the small CNNs with CLASSES_WIDENING times the
filters and square pooling.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from capforge.errors import SettingsError


# small_cnn has 1.5 times its first filters (32, 64, 128, 160): it read noisy real captchas
# better in the same budget; twice as many trained too few steps (bench/results/defaults.md,
# "Fused batch normalisation").
CNN_WIDTHS = {"small_cnn": (48, 96, 192, 240), "tiny_cnn": (16, 32, 64, 96)}
# A class rests on everything the pooled features hold at once, not on glyphs read by GRUs
# along the width: photo tiles need more filters, and square pooling (a photo is not read
# along its width). Figures: bench/results/defaults.md, "Photo classes".
CLASSES_WIDENING = 2


@functools.cache
def fused_batch_normalization() -> type:
    """Keras' BatchNormalization whose training step runs TensorFlow's fused kernel.

    Keras 3 normalises through separate moment, subtract and scale ops; the fused op does the
    same in one pass, and a CTC epoch on two CPU cores took about a quarter less time with it
    (bench/results/defaults.md, "Fused batch normalisation"). Inference, and so the ONNX
    export, keeps Keras' own path. Written here because Keras 3 has no fused option.
    """
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="capforge")
    class FusedBatchNormalization(keras.layers.BatchNormalization):
        def call(self, inputs: Any, training: bool | None = None, mask: Any = None) -> Any:
            fusable = inputs.ndim == 4 and self.axis in (-1, 3) and self.scale and self.center and not self.renorm
            if not (training and self.trainable and fusable) or mask is not None:
                return super().call(inputs, training=training, mask=mask)
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, self.gamma, self.beta, epsilon=self.epsilon, is_training=True)
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1 - self.momentum))
            return y

    return FusedBatchNormalization


def _small_cnn(inputs: Any, widths: tuple[int, int, int, int], square: bool = False) -> Any:
    """A strided stem and three separable blocks: cheap enough to train on two CPU cores.

    Height /16, width /8: 16 CTC time steps for a 128-pixel width, room for labels of about
    W/16 characters (with W/4, CTC stayed on its all-blank plateau far longer). Each block
    pools between its depthwise and pointwise convolutions, so no map is widened at full size:
    on a CPU the elementwise work on large maps (normalisation, activation) costs more than the
    convolutions. Figures: bench/results/defaults.md.
    ``widths``: the stem's and each block's filters (``tiny_cnn``: a third to two fifths of
    ``small_cnn``'s);
    ``square``: halve the width as often as the height (/16 both), for whole-image classes.
    """
    from keras import layers

    batch_normalization = fused_batch_normalization()

    def normalised(x: Any) -> Any:  # momentum 0.9: the statistics settle on small datasets too
        return layers.Activation("relu")(batch_normalization(momentum=0.9)(x))

    x = normalised(layers.Conv2D(widths[0], 3, strides=2, padding="same", use_bias=False)(inputs))
    for filters, step in zip(widths[1:], ((2, 2), (2, 2) if square else (2, 1), (2, 2))):
        x = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
        x = layers.MaxPooling2D(step, padding="same")(x)
        x = normalised(layers.Conv2D(filters, 1, use_bias=False)(x))
    return x


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def sequence_cut(network: Any, input_width: int) -> str:
    """The last layer of ``network`` that keeps at least ``input_width / 8`` columns (CTC steps)."""
    min_width = max(1, input_width // 8)
    keep = [layer for layer in network.layers
            if len(getattr(layer, "output").shape) == 4 and layer.output.shape[2] >= min_width]
    return keep[-1].name


def efficientnet_body(factory_name: str, x: Any, pretrained: bool,
                      outputs: Callable[[Any], tuple[str, ...]] | tuple[str, ...] = ()) -> tuple[Any, Any]:
    """A keras.applications EfficientNet without its own input scaling, and ``x`` prepared for it.

    ``outputs`` names the layers whose outputs it returns (or picks them from the whole
    network); by default the last.

    Its built-in Normalization layer holds its statistics as captured tensors that the ONNX
    export cannot freeze, so the network is cut after it: random init needs no normalisation,
    ImageNet weights get the same one as a constant Rescaling.
    """
    import keras
    from keras import layers

    if x.shape[-1] == 1:
        x = layers.Concatenate(name="grey_to_rgb")([x, x, x])
    network = getattr(keras.applications, factory_name)(
        include_top=False, weights="imagenet" if pretrained else None, input_shape=tuple(x.shape[1:]))
    if pretrained:
        x = layers.Rescaling([1 / s for s in IMAGENET_STD], [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)],
                             name="imagenet_normalisation")(x)
    names = outputs(network) if callable(outputs) else outputs
    ends = [network.get_layer(name).output for name in names] if names else [network.output]
    return keras.Model(network.get_layer("stem_conv_pad").input, ends if len(ends) > 1 else ends[0],
                       name=network.name), x


def _application(factory_name: str) -> Callable[..., Any]:
    """A keras.applications network without its top, applied to ``inputs``."""

    def build(inputs: Any, pretrained: bool, kind: str) -> Any:
        import keras
        from keras import layers

        width = inputs.shape[2]
        if factory_name.startswith("EfficientNet"):
            cut = (lambda network: (sequence_cut(network, width),)) if kind == "sequence" else ()
            return efficientnet_body(factory_name, inputs, pretrained, cut)
        factory = getattr(keras.applications, factory_name)
        x = inputs
        if pretrained and inputs.shape[-1] == 1:
            x = layers.Concatenate()([x, x, x])  # ImageNet weights expect three channels
        options: dict[str, Any] = {"include_top": False, "weights": "imagenet" if pretrained else None,
                                   "input_shape": tuple(x.shape[1:])}
        if factory_name.startswith("MobileNetV3"):
            options["include_preprocessing"] = False
        try:
            network = factory(**options)
        except (ValueError, OSError) as exc:
            raise SettingsError(f"BACKBONE {factory_name} cannot be built for input "
                                f"{tuple(inputs.shape[1:])}: {exc}") from None
        if kind == "sequence":
            network = keras.Model(network.inputs, network.get_layer(sequence_cut(network, width)).output)
        return network, x

    return build


BACKBONES: dict[str, Callable[..., Any] | None] = {
    "small_cnn": None,
    "tiny_cnn": None,
    "densenet121": _application("DenseNet121"),
    "densenet169": _application("DenseNet169"),
    "mobilenet_v2": _application("MobileNetV2"),
    "mobilenet_v3_small": _application("MobileNetV3Small"),
    "mobilenet_v3_large": _application("MobileNetV3Large"),
    "efficientnet_b0": _application("EfficientNetB0"),
}


# What the keras.applications backbones did on two CPU cores (bench/results/realsets.md, rkn6 with
# all 6,000 labels, 5 minutes; the default small_cnn read 0.886 there in 20 epochs): none learnt.
CPU_FIGURES = {"densenet121": "0.000 in 2 epochs", "densenet169": "0.000 in 2 epochs",
               "efficientnet_b0": "0.000 in 5 epochs", "mobilenet_v2": "0.000 in 5 epochs",
               "mobilenet_v3_large": "0.000 in 6 epochs", "mobilenet_v3_small": "0.000 in 16 epochs"}


def cpu_warning(name: str) -> str | None:
    """What to expect of backbone ``name`` on a CPU, where it measurably needs a GPU or hours; else None."""
    if name not in CPU_FIGURES:
        return None
    return (f"BACKBONE = {name!r} needs a GPU or hours: on two CPU cores it read {CPU_FIGURES[name]} of "
            f"5 minutes on a 6,000-image real set (rkn6), where the default 'small_cnn' read 0.886 "
            f"(bench/results/realsets.md); 'small_cnn' or 'tiny_cnn' learn on a CPU")


def build_backbone(name: str, input_shape: tuple[int, int, int], kind: str = "sequence",
                   pretrained: bool = False) -> Any:
    """A keras.Model from images to features.

    >>> build_backbone("small_cnn", (32, 96, 1)).output.shape
    (None, 2, 12, 240)
    """
    import keras

    if name not in BACKBONES:
        raise SettingsError(f"unknown BACKBONE {name!r}; allowed: {', '.join(BACKBONES)}")
    inputs = keras.Input(input_shape, name="image")
    builder = BACKBONES[name]
    if builder is None:
        classes = kind == "classes"
        widths = tuple((CLASSES_WIDENING if classes else 1) * w for w in CNN_WIDTHS[name])
        return keras.Model(inputs, _small_cnn(inputs, widths, square=classes), name=name)
    network, x = builder(inputs, pretrained, kind)
    return keras.Model(inputs, network(x), name=name)
