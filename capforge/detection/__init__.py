"""Detection parts shared by training, evaluation and serving: anchors and box coding, NMS,
mAP and click ordering. NumPy only (the box-target encoder for tf.data imports TensorFlow
lazily), so the server needs no TensorFlow."""
