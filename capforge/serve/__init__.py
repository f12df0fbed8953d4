"""Serving: the onnxruntime predictor (no TensorFlow at run time)."""
