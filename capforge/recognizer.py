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
from capforge.answers import build_answer, parse_inputs, prompt_clicks
from capforge.data.images import open_image
from capforge.serve.inputs import image_bytes
from capforge.serve.predictor import MANIFEST, Predictor, companion_of
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
        # a click captcha's CLICK_RECOGNIZER, a grid's PROMPT_MODEL: beside the workspace, in its works folder
        self.companion = companion_of(self.predictor.mode, source, export.resolve().parent.parent.parent)

    def recognize(self, image: bytes | str | Path | Image.Image, prompt: str | list[str] | None = None,
                  **inputs: Any) -> dict[str, Any]:
        """The answer the HTTP API gives: result, confidence, chars (boxes for click captchas, the
        mode's own fields), accepted, request_id (None for a PIL image: it has no file bytes) and
        time_ms. ``image``: file bytes, a path, a PIL image or base64 text (or a data URL).
        ``prompt``: what to click (click and grid captchas), answered with ``clicks``. ``inputs``:
        what the mode reads beside the image (``Mode.inputs``: a slider's ``piece``, as the same
        kinds of image, and ``display_width``)."""
        started = time.perf_counter()
        mode = self.predictor.mode
        given = parse_inputs(mode, inputs, _file_bytes)
        data = None if isinstance(image, Image.Image) else _file_bytes(image)
        needed = mode.cuts_image or given or prompt is not None
        picture = (image if data is None else open_image(data)) if needed else None
        if mode.cuts_image:
            prediction = mode.answer_image(picture, self.predictor.predict, self.companion, prompt)
        else:
            prediction = self.predictor.predict([image if data is None else data])[0]
        if given:
            prediction = mode.respond(prediction, picture, given)
        answer = build_answer(self.name, prediction, mode, self.min_confidence,
                              content_key(data) if data is not None else None, started)
        if prompt is not None:
            answer["clicks"] = prompt_clicks(mode, picture, answer, prediction, prompt, self.companion)
        return answer


def _file_bytes(image: bytes | str | Path) -> bytes:
    """An image's file bytes: ``image`` is the bytes, a path, or base64 text (or a data URL)."""
    if isinstance(image, bytes):
        return image
    if isinstance(image, str) and not Path(image).is_file():
        return image_bytes(image, MAX_TEXT_IMAGE_BYTES)
    return Path(image).read_bytes()
