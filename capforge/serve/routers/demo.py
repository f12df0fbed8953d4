"""Synthetic captchas for trying a crawler against the server (``app.py --demo-captcha``)."""

from __future__ import annotations

import asyncio
import random

from fastapi import APIRouter
from fastapi.responses import Response

from capforge.data.generate import CaptchaSpec, render
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
        """A fresh synthetic captcha of the model's kind; its label is in X-Captcha-Label."""
        served = registry.resolve(model)
        symbols = served.predictor.mode.charset.symbols
        length = served.settings.CAPTCHA_LENGTH
        spec = CaptchaSpec("".join(s for s in symbols if len(s) == 1), length, length)
        seed = random.SystemRandom().randrange(10**9)
        rng = random.Random(seed)
        label = "".join(rng.choice(spec.charset) for _ in range(length))
        data = await asyncio.to_thread(render, spec, label, seed, 0)
        return Response(data, media_type="image/png", headers={"X-Captcha-Label": label})

    return routes
