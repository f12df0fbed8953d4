"""EFFICIENTDET, click captchas, in one package: the mode (mode.py), its network (network.py),
anchors and box coding (anchors.py), non-max suppression (nms.py), mAP (metrics.py), box labels
in VOC / YOLO files (boxes.py), synthetic click captchas (clicks.py), its tf.data pipeline
(pipeline.py), its test step (evaluation.py) and click ordering by prompt (order.py).

NumPy only at import, so the server needs no TensorFlow; the network and pipeline import
TensorFlow when they are used.
"""

from capforge.modes.efficientdet.mode import EfficientDetMode

__all__ = ["EfficientDetMode"]
