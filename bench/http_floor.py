"""Bare ASGI apps that show what serving costs before capforge's own code: run by
``bench/serve.py --floor`` under the same uvicorn, worker count and load generator as the server.

``CAPFORGE_FLOOR_WORK`` picks how much of a recognition each request does, cumulatively:

- ``http``: read the body, answer a fixed JSON (uvicorn's own cost per request);
- ``preprocess``: also parse the JSON, decode the base64 and the image, and preprocess it with
  the export's parameters, as the server does;
- ``model``: also run the model on that one image and decode its answer (no batching, no
  metrics, no routing).

``CAPFORGE_FLOOR_EXPORT`` is the export folder (for ``preprocess`` and ``model``).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

WORK = os.environ.get("CAPFORGE_FLOOR_WORK", "http")
WORKS = ("http", "preprocess", "model")
if WORK not in WORKS:
    raise SystemExit(f"CAPFORGE_FLOOR_WORK={WORK!r}; allowed: {', '.join(WORKS)}")
FIXED = json.dumps({"result": "abcd", "confidence": 1.0}).encode()
HEADERS = [(b"content-type", b"application/json")]

predictor: Any = None
if WORK != "http":
    from capforge.serve.predictor import Predictor
    from capforge.settings import load_settings

    # as many model threads as the server uses by default
    predictor = Predictor(Path(os.environ["CAPFORGE_FLOOR_EXPORT"]), load_settings(None).INFERENCE_THREADS or None)


def answer(body: bytes) -> bytes:
    """The response body for one request body, doing as much work as WORK says."""
    if predictor is None:
        return FIXED
    array, _ = predictor.placed(base64.b64decode(json.loads(body)["image"]))
    if WORK == "preprocess":
        return FIXED
    prediction = predictor.decode(predictor.probabilities(array[None]))[0]
    return json.dumps({"result": prediction.text, "confidence": prediction.confidence}).encode()


async def app(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    content = answer(body) if scope["path"] != "/healthz" else b"{}"
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": content})
