"""Hook: your own Keras model for this workspace.

Return a Keras model from ``build_model`` to replace the configured BACKBONE, or return None
(the default) to use it. The model takes images of shape
(IMAGE_HEIGHT, IMAGE_WIDTH, IMAGE_CHANNELS) with values in [0, 1]; capforge adds the head, loss
and decoding of the MODE on top of the features it returns.

MODE = 'EFFICIENTDET' does not call this hook: its backbone is EfficientNetB<PHI> inside the
EfficientDet network (choose the size with PHI).
"""


def build_model(settings, input_shape):
    """Return a keras.Model producing a feature map, or None to use settings.BACKBONE."""
    return None
