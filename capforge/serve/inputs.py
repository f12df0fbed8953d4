"""Turning what a request sends into image bytes, with a stable error code for each mistake.

>>> import base64
>>> image_bytes("data:image/png;base64," + base64.b64encode(b"x").decode(), 10)
b'x'
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from capforge.errors import CapforgeError

DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,",
                      re.IGNORECASE)


class RequestError(CapforgeError):
    """A bad request: answered with ``status`` and a JSON error ``code``, never a 500."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def image_bytes(text: str, limit: int) -> bytes:
    """Decode base64 or a ``data:image/...;base64,`` URL; check it is not empty or too large."""
    if not isinstance(text, str) or not text.strip():
        raise RequestError(422, "missing_image", "the 'image' field is empty; send base64 image bytes")
    text = text.strip()
    match = DATA_URL.match(text)
    if match:
        kind = (match["type"] or "").lower()
        if not kind.startswith("image/"):
            raise RequestError(415, "unsupported_media_type",
                               f"the data URL holds {kind or 'text/plain'}; allowed: image/* data URLs")
        if not match["b64"]:
            raise RequestError(400, "invalid_base64", "the data URL is not base64-encoded (';base64,' missing)")
        text = text[match.end():]
    if len(text) * 3 // 4 > limit + 3:
        raise RequestError(413, "image_too_large", f"the image is over {limit} bytes (MAX_IMAGE_BYTES)")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        data = _without_whitespace(text)
    return checked_bytes(data, limit)


def _without_whitespace(text: str) -> bytes:
    """Base64 wrapped over lines (MIME style) decodes once its whitespace is gone."""
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, "invalid_base64", "the 'image' field is not valid base64") from None


def checked_bytes(data: bytes, limit: int) -> bytes:
    """Refuse empty or oversized uploads."""
    if not data:
        raise RequestError(400, "empty_image", "the image is 0 bytes")
    if len(data) > limit:
        raise RequestError(413, "image_too_large",
                           f"the image is {len(data)} bytes; the limit is {limit} (MAX_IMAGE_BYTES)")
    return data


def error_body(code: str, message: str) -> dict[str, Any]:
    """The one error format of every route: {"error": {"code": ..., "message": ...}}."""
    return {"error": {"code": code, "message": message}}


async def json_body(request: Any) -> dict[str, Any]:
    """The request's JSON object; 415 without a JSON content type, 400 when it is not an object."""
    if "application/json" not in request.headers.get("content-type", ""):
        raise RequestError(415, "wrong_content_type", "send Content-Type: application/json; received "
                           f"{request.headers.get('content-type', 'none')!r}")
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise RequestError(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise RequestError(400, "invalid_json", "the body must be a JSON object")
    return body


def required(body: dict[str, Any], name: str) -> Any:
    """``body[name]``, or 422 missing_field."""
    if name not in body:
        raise RequestError(422, "missing_field", f"the field {name!r} is required")
    return body[name]


def model_name(value: Any) -> str | None:
    """The requested model's name (None: the only one), or 400 when it is not a string."""
    if value is not None and not isinstance(value, str):
        raise RequestError(400, "invalid_model_name", "'model' must be a string")
    return value
