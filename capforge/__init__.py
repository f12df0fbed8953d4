"""capforge: scaffold, train and serve captcha recognisers, one workspace per site."""

from capforge.version import __version__

import os as _os

# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) is not for our users.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def __getattr__(name: str):  # noqa: ANN202 - PEP 562 module attribute hook
    """``capforge.Recognizer``, imported on first use so that ``import capforge`` stays light
    for the server and the workspace scripts (the steps as functions: capforge.workflow)."""
    if name == "Recognizer":
        from capforge.recognizer import Recognizer

        return Recognizer
    raise AttributeError(f"module 'capforge' has no attribute {name!r}")
