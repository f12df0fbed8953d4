"""A pretrained reader of characters, for sites whose characters are too many to learn from their
own captchas (click-the-Chinese-characters captchas: hundreds of distinct characters, one or two
examples of each): ddddocr's bundled OCR model, run by onnxruntime from its wheel, no download.
Named as a companion, ``CLICK_RECOGNIZER = 'ddddocr'`` (each detected box read) or
``PROMPT_MODEL = 'ddddocr'`` (a grid's prompt read). It answers like a Predictor: each image's
text, and the characters it may be, likeliest first, for matching a prompt against the boxes.
"""

from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np
from PIL import Image

from capforge.errors import WorkspaceError
from capforge.modes import Prediction

NAME = "ddddocr"


class DdddocrReader:
    """ddddocr's OCR (``pip install ddddocr``; ./run installs it) as a companion reader."""

    def __init__(self) -> None:
        try:
            import ddddocr
        except ImportError:
            raise WorkspaceError(f"'{NAME}' reads with the ddddocr package, which is not installed: "
                                 "pip install ddddocr (./run installs it)") from None
        self.ocr = ddddocr.DdddOcr(show_ad=False)

    def predict(self, images: Sequence[Any]) -> list[Prediction]:
        """Each image's reading, and in ``top`` every character's best probability over the reading's
        steps, likeliest first: all of them, so that a prompted character the reader finds unlikely
        everywhere still goes to its likeliest box."""
        out = []
        for image in images:
            buffer = io.BytesIO()
            (image if isinstance(image, Image.Image) else Image.open(io.BytesIO(image))).convert("RGB").save(buffer, "PNG")
            read = self.ocr.classification(buffer.getvalue(), probability=True)
            charset = read["charset"]
            best = np.asarray(read["probabilities"]).reshape(-1, len(charset)).max(axis=0)
            top = [(charset[i], float(best[i])) for i in np.argsort(-best) if charset[i]]
            out.append(Prediction(read["text"], float(read["confidence"]), top=top))
        return out
