"""Corrected answers sent by a crawler or a person: into the review inbox, labelled."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from capforge.data.images import image_suffix, open_image
from capforge.errors import ImageError
from capforge.inbox import content_key
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
        """Keep a corrected sample in data/inbox with its label; a person confirms it in review."""
        metrics.requests.labels("feedback").inc()
        body = await json_body(request)
        model = registry.resolve(model_name(body.get("model")))
        if not model.settings.FEEDBACK:
            raise RequestError(403, "feedback_disabled", "feedback is off; set FEEDBACK = True in settings.py")
        label = required(body, "label")
        inbox = model.inbox
        problem = inbox.label_problem(label)
        if problem:
            raise RequestError(400, "invalid_label", problem)
        data = image_bytes(required(body, "image"), model.settings.MAX_IMAGE_BYTES)
        try:
            open_image(data)
        except ImageError as exc:
            raise RequestError(400, "invalid_image", str(exc).replace("image bytes: ", "")) from None
        item = inbox.add(data, image_suffix(data), {"source": "feedback", "label": label, "model": model.name,
                                                     "model_version": model.version})
        if item is None:
            known = inbox.find(content_key(data))
            if known is None:
                raise RequestError(409, "inbox_full", f"data/inbox is full (INBOX_MAX_FILES="
                                   f"{model.settings.INBOX_MAX_FILES}, INBOX_MAX_MB={model.settings.INBOX_MAX_MB}); "
                                   "review it first")
            item = known  # the same image was kept before: one copy
        return {"stored": model.workspace.relative(item.image)}

    return routes
