"""Hooks: custom label reading and image handling for this workspace.

Both hooks are optional; the defaults below change nothing.
"""

from pathlib import Path

from PIL import Image


def label_from_path(path: Path):
    """Return the label of the image at ``path``, or None to use capforge's rules
    (labels.txt / labels.csv, class sub-folder, then the file name up to LABEL_SEPARATOR)."""
    return None


def preprocess_image(image: Image.Image) -> Image.Image:
    """Change a decoded image before capforge resizes it (crop a border, threshold, ...).

    It runs in packing, training, testing and serving alike.
    """
    return image
