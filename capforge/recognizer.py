"""A served model in-process: ``Recognizer("works/weibo").recognize(image)``::

    from capforge import Recognizer
    Recognizer("works/weibo").recognize("captcha.png")
    # {'model': 'weibo', 'result': 'x7k2', 'confidence': 0.98, 'chars': [...], 'accepted': True, ...}

It answers through the export's onnxruntime session exactly as the HTTP API does (same
preprocessing, calibration and ``accepted`` gate), without starting a server.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PIL import Image

from capforge.errors import WorkspaceError
from capforge.inbox import content_key
from capforge.modes import accepted
from capforge.serve.inputs import image_bytes
from capforge.serve.predictor import MANIFEST, Predictor
from capforge.settings import load_settings

MAX_TEXT_IMAGE_BYTES = 50_000_000  # base64 text handed to recognize() in-process: no request limit applies


class Recognizer:
    """A workspace's current export (or an export folder itself), answering images in-process."""

    def __init__(self, location: str | Path, threads: int | None = None) -> None:
        path = Path(location)
        current = path / "exports" / "current"
        if (current / MANIFEST).is_file():
            settings: Any = load_settings(path)
            export, self.name = current, path.resolve().name
        elif (path / MANIFEST).is_file():
            export, settings = path, None
            self.name = path.resolve().parent.parent.name if path.parent.name == "exports" else path.resolve().name
        else:
            raise WorkspaceError(f"{path} holds no export: give a workspace after save_model.py (works/site) "
                                 "or an export folder (works/site/exports/current)")
        self.predictor = Predictor(export, threads, settings)
        source = settings if settings is not None else self.predictor.manifest["settings"]
        self.min_confidence = float(source.get("MIN_CONFIDENCE", 0.0))

    def recognize(self, image: bytes | str | Path | Image.Image) -> dict[str, Any]:
        """The answer the HTTP API gives: result, confidence, chars (boxes for click captchas),
        accepted, request_id (None for a PIL image: it has no file bytes) and time_ms. ``image``: file bytes, a path, a PIL image or base64 text (or a
        data URL)."""
        started = time.perf_counter()
        if isinstance(image, str) and not Path(image).is_file():
            image = image_bytes(image, MAX_TEXT_IMAGE_BYTES)
        prediction = self.predictor.predict([image])[0]
        data = image if isinstance(image, bytes) else None if isinstance(image, Image.Image) else Path(image).read_bytes()
        return {"model": self.name, **prediction.to_dict(),
                "accepted": accepted(prediction.confidence, self.min_confidence),
                "request_id": content_key(data) if data is not None else None,
                "time_ms": round((time.perf_counter() - started) * 1000, 3)}
