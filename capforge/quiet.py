"""Quiet, honest output: TensorFlow's start-up and platform notices, which mean nothing for a
user (oneDNN, CUDA probing on machines without a GPU, CPU instruction sets), are filtered out
of the process's stderr; everything else, warnings that matter included, passes through.

TensorFlow writes these from C++ before its own log level applies (``TF_CPP_MIN_LOG_LEVEL``
does not hide them in 2.21), so the filter works on file descriptor 2, through ``wurlitzer``.
``CAPFORGE_VERBOSE=1`` turns the filter off.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from contextlib import contextmanager
from typing import Iterator, TextIO

VERBOSE_VARIABLE = "CAPFORGE_VERBOSE"

NOISE = re.compile(
    r"absl::InitializeLog\(\)|oneDNN custom operations are on|cudart_stub\.cc|cuda_platform\.cc|"
    r"cuInit|cpu_feature_guard\.cc|To enable the following instructions|rebuild TensorFlow with the "
    r"appropriate compiler flags|oneDNN supports DT_\w+ only on platforms|Unable to register cu\w+ "
    r"factory|computation placer already registered|Issue encountered when serializing "
    r"table_initializer|TF-TRT Warning|op_level_cost_estimator\.cc|"
    # the two lines that follow the table_initializer notice when a model is exported
    r"^Type is unsupported, or the types of the items don't match field type in CollectionDef|"
    r"^'NoneType' object has no attribute 'name'\s*$"
)

# Python warnings from libraries with nothing for a user to act on.
IGNORED_WARNINGS = (
    (r"`shuffle=True` was passed", UserWarning),  # Keras, about tf.data inputs
    (r"In the future `np\.object`", FutureWarning),  # tf2onnx on NumPy 2
    (r"__array__ implementation doesn't accept a copy keyword", DeprecationWarning),
)


def verbose() -> bool:
    """Whether the user asked to see everything (``CAPFORGE_VERBOSE=1``)."""
    return os.environ.get(VERBOSE_VARIABLE, "") not in ("", "0")


class NoiseFilter:
    """A text sink that forwards whole lines (and progress-bar updates) to ``target``, except
    the lines NOISE matches. Text after the last line end waits for the rest of its line."""

    def __init__(self, target: TextIO) -> None:
        self.target = target
        self.pending = ""

    def write(self, text: str) -> int:
        self.pending += text
        *done, self.pending = re.split(r"(?<=[\r\n])", self.pending)
        kept = "".join(part for part in done if not NOISE.search(part))
        if kept:
            self.target.write(kept)
            self.target.flush()
        return len(text)

    def flush(self) -> None:
        if self.pending and not NOISE.search(self.pending):
            self.target.write(self.pending)
        self.pending = ""
        self.target.flush()


_active = False  # a step run inside another (the demo's) is already filtered


@contextmanager
def quiet_output() -> Iterator[None]:
    """Within: stderr without the NOISE lines, and without the IGNORED_WARNINGS."""
    global _active
    with warnings.catch_warnings():
        for message, category in IGNORED_WARNINGS:
            warnings.filterwarnings("ignore", message, category)
        if verbose() or _active:
            yield
            return
        from wurlitzer import pipes

        sys.stderr.flush()
        target = os.fdopen(os.dup(sys.__stderr__.fileno()), "w", buffering=1, encoding="utf-8",
                           errors="replace")
        sink = NoiseFilter(target)
        _active = True
        try:
            with pipes(stdout=None, stderr=sink):
                yield
                sys.stderr.flush()
        finally:
            _active = False
            sink.flush()
            target.close()
