"""capforge: scaffold, train and serve captcha recognisers, one workspace per site."""

__version__ = "0.1.0"

import os as _os

# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) is not for our users.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
