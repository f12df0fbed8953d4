"""The one exception hierarchy of capforge.

Every mistake a user can make (bad settings, a bad path, bad data) raises a subclass of
:class:`CapforgeError`. ``capforge.steps`` catches it once, prints the message and exits non-zero
without a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
from pathlib import Path
from typing import Iterator

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded")  # TensorFlow's own file errors


class CapforgeError(Exception):
    """Base class: a problem the user can fix, described in one line."""

    exit_code = 2


class SettingsError(CapforgeError):
    """Raised when a workspace ``settings.py`` or a ``--set`` override is invalid."""


class InputError(CapforgeError):
    """A request input beside the image (``Mode.inputs``) that the model's mode does not read, or
    one of the wrong kind: the API answers 400 with ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class WorkspaceError(CapforgeError):
    """Raised when a workspace is missing, malformed, or would be overwritten."""


class DataError(CapforgeError):
    """Raised when the dataset cannot be used as asked (nothing to split, a file in the way)."""


class ImageError(CapforgeError):
    """Raised when bytes or a file cannot be decoded as an image."""


class ImageTooLargeError(ImageError):
    """Raised when an image has more pixels than preprocessing accepts (a decompression bomb)."""


class NotBuiltError(CapforgeError):
    """Raised by a step whose capability is not built yet; it never pretends to work."""

    exit_code = 3


class Aborted(CapforgeError):
    """Raised when the user declines a confirmation prompt."""

    exit_code = 1


class TargetNotFound(CapforgeError):
    """Raised when a prompted click target matches none of the detected boxes."""


class DiskFullError(CapforgeError):
    """Raised when the disk fills up while a step writes; what was in use before stays in use."""


@contextlib.contextmanager
def disk_space(doing: str, kept: str, staging: Path) -> Iterator[None]:
    """Write ``staging``: on any failure remove it (never a half-written folder left behind), and
    turn a full disk while ``doing`` into a DiskFullError that says ``kept`` (what is still in use)."""
    try:
        yield
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if getattr(exc, "errno", None) not in DISK_FULL_ERRNOS and not any(t in str(exc) for t in DISK_FULL_TEXTS):
            raise
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        raise DiskFullError(f"the disk is full: {doing} stopped{where}; {kept}. Free some space and run it "
                            "again") from None


class ReviewError(CapforgeError):
    """Raised when a review answer cannot be applied; ``code`` says why (the API's error code)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
