"""The review loop over HTTP: crawlers report whether answers were right, people review the inbox.

A right outcome makes the kept image a labelled training image (site-verified); a wrong one puts
it first in the review queue. The review routes serve the same queue as the page's review tab and
``capforge review`` in a terminal (capforge.inbox.Review).
"""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Request

from capforge.errors import DataError, ReviewError
from capforge.serve.inputs import RequestError, json_body, model_name, required
from capforge.serve.metrics import Metrics
from capforge.serve.registry import ModelRegistry
from capforge.serve.schemas import (ReportAnswer, ReportRequest, ReviewAnswer, ReviewItem, ReviewRequest, errors,
                                    json_request)

OUTCOMES = ("right", "wrong")
REVIEW_STATUS = {"invalid_action": 400, "invalid_label": 400, "unknown_item": 404}


def router(registry: ModelRegistry, metrics: Metrics) -> APIRouter:
    """POST /api/v1/report; GET and POST /api/v1/review (one function: the handlers are closures
    over ``registry`` and ``metrics``)."""
    routes = APIRouter(tags=["review loop"])

    @routes.post("/api/v1/report", response_model=ReportAnswer, openapi_extra=json_request(ReportRequest),
                 responses=errors(400, 401, 403, 404, 415, 422))
    async def report(request: Request) -> dict[str, Any]:
        """What the site said about an answer: {"request_id": ..., "outcome": "right" | "wrong"}."""
        metrics.requests.labels("report").inc()
        body = await json_body(request)
        model = registry.resolve(model_name(body.get("model")))
        key, outcome = required(body, "request_id"), required(body, "outcome")
        if outcome not in OUTCOMES:
            raise RequestError(400, "invalid_outcome", f"'outcome' must be 'right' or 'wrong'; received {str(outcome)[:40]!r}")
        if model.settings.CAPTURE == "off" and not model.settings.OUTCOME_WINDOW:
            raise RequestError(403, "reports_disabled", "this model keeps no answers to report on; set "
                               "OUTCOME_WINDOW (or CAPTURE) in its settings.py")
        inbox = model.inbox
        item = inbox.find(key) if isinstance(key, str) else None
        if item is None:
            raise RequestError(404, "unknown_request", f"no kept image for request_id {str(key)[:40]!r}: it was "
                               f"never kept, has left the newest OUTCOME_WINDOW={model.settings.OUTCOME_WINDOW} "
                               "answers, or was reported already")
        try:
            stored = inbox.report(item, outcome)
        except DataError as exc:  # the answer itself is no label (empty, or breaks the charset)
            raise RequestError(400, "invalid_label", f"the answer cannot become a label: {exc}") from None
        metrics.outcomes.labels(model.name, outcome).inc()
        where = stored if stored is not None else inbox.find(item.key).image
        return {"outcome": outcome, "stored": model.workspace.relative(where)}

    @routes.get("/api/v1/review", response_model=ReviewItem, responses=errors(400, 401, 404))
    async def next_item(model: str | None = None) -> dict[str, Any]:
        """The next image to review (lowest confidence first; answers reported wrong before all)."""
        served = registry.resolve(model)
        item, left = served.review().next()
        if item is None:
            return {"left": 0}
        return {"left": left, "key": item.key, "answer": item.answer, "confidence": item.record.get("confidence"),
                "wrong": item.record.get("outcome") == "wrong", "about": item.describe(),
                "image": base64.b64encode(item.image.read_bytes()).decode()}

    @routes.post("/api/v1/review", response_model=ReviewAnswer, openapi_extra=json_request(ReviewRequest),
                 responses=errors(400, 401, 404, 415, 422))
    async def review(request: Request) -> dict[str, Any]:
        """A person's answer: {"key": ..., "action": "label", "label": "x7k2"} (or "skip", "unreadable")."""
        body = await json_body(request)
        served = registry.resolve(model_name(body.get("model")))
        action, key = required(body, "action"), required(body, "key")
        label, reason = body.get("label") or "", body.get("reason") or ""
        if not isinstance(label, str) or not isinstance(reason, str):
            raise RequestError(400, "invalid_label", "'label' and 'reason' must be strings")
        session = served.review()
        try:
            stored = session.act(key, action, label, reason)
        except ReviewError as exc:
            raise RequestError(REVIEW_STATUS[exc.code], exc.code, str(exc)) from None
        return {"action": action, "stored": served.workspace.relative(stored) if stored else None,
                "left": len(served.inbox.items())}

    return routes
