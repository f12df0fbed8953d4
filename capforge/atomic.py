"""Files written whole or not at all: a killed process leaves the previous file (or none),
never a half-written one that reads as complete."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a hidden partial file beside ``path``, then rename it into place."""
    partial = path.with_name(f".{path.name}.part")
    partial.write_bytes(data)
    os.replace(partial, path)
