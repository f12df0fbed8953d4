"""Synthetic captchas for trying a crawler against the server (``app.py --demo-captcha``)."""

from __future__ import annotations

import asyncio
import random

from fastapi import APIRouter
from fastapi.responses import Response

from capforge.data.labels import label_from_name
from capforge.serve.metrics import Metrics
from capforge.serve.registry import ModelRegistry
from capforge.serve.schemas import errors


def router(registry: ModelRegistry, metrics: Metrics) -> APIRouter:
    """GET /demo/captcha."""
    routes = APIRouter(tags=["demo"])

    @routes.get("/demo/captcha", response_class=Response, responses={
        200: {"content": {"image/png": {}}, "description": "a PNG; its label in the X-Captcha-Label header"},
        **errors(400, 404, 422)})
    async def demo_captcha(model: str | None = None) -> Response:
        """A fresh synthetic captcha of the model's kind (what its gen_sample_by_captcha.py draws);
        its label (text, an angle, a gap's x) is in X-Captcha-Label."""
        served = registry.resolve(model)
        mode = served.predictor.mode
        length = served.settings.CAPTCHA_LENGTH
        charset = "".join(s for s in mode.charset.symbols if len(s) == 1) or "0123456789"
        spec = mode.sample_spec(served.settings, charset, (length, length), None, None, "png")
        name, data = (await asyncio.to_thread(spec.files, random.SystemRandom().randrange(10**9), 0))[0]
        label = label_from_name(name, "_")  # every generator names its files <label>_<n>
        return Response(data, media_type="image/png", headers={"X-Captcha-Label": label})

    return routes
