"""Corrected answers sent back by a crawler or a person, kept as labelled images."""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any

from fastapi import APIRouter, Request

from capforge.data.images import open_image
from capforge.errors import ImageError
from capforge.serve.inputs import RequestError, image_bytes, json_body, model_name, required
from capforge.serve.metrics import Metrics
from capforge.serve.registry import ModelRegistry
from capforge.serve.schemas import FeedbackAnswer, FeedbackRequest, errors, json_request


def router(registry: ModelRegistry, metrics: Metrics) -> APIRouter:
    """POST /api/v1/feedback (when the model's workspace sets FEEDBACK = True)."""
    routes = APIRouter(tags=["feedback"])

    @routes.post("/api/v1/feedback", response_model=FeedbackAnswer, openapi_extra=json_request(FeedbackRequest),
                 responses=errors(400, 401, 403, 404, 409, 413, 415, 422))
    async def feedback(request: Request) -> dict[str, Any]:
        """Store a corrected sample as data/feedback/<label>_<hash>.png for the next training."""
        metrics.requests.labels("feedback").inc()
        body = await json_body(request)
        model = registry.resolve(model_name(body.get("model")))
        if not model.settings.FEEDBACK:
            raise RequestError(403, "feedback_disabled", "feedback is off; set FEEDBACK = True in settings.py")
        label = required(body, "label")
        if not isinstance(label, str) or not 0 < len(label) <= 64 or any(c in label for c in "/\\\0_-.") \
                or not label.isprintable():
            raise RequestError(400, "invalid_label", "'label' must be 1-64 printable characters without "
                               "'/', '\\', '_', '-' or '.'")
        data = image_bytes(required(body, "image"), model.settings.MAX_IMAGE_BYTES)
        try:
            image = open_image(data)
        except ImageError as exc:
            raise RequestError(400, "invalid_image", str(exc).replace("image bytes: ", "")) from None
        folder = model.workspace.feedback
        folder.mkdir(parents=True, exist_ok=True)
        if sum(1 for _ in folder.iterdir()) >= model.settings.FEEDBACK_MAX_FILES:
            raise RequestError(409, "feedback_full", f"{model.settings.FEEDBACK_MAX_FILES} feedback images "
                               "are stored already (FEEDBACK_MAX_FILES)")
        target = folder / f"{label}_{hashlib.sha256(data).hexdigest()[:12]}.png"
        partial = folder / f".{target.name}.part"
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        partial.write_bytes(buffer.getvalue())
        os.replace(partial, target)
        return {"stored": target.name}

    return routes
