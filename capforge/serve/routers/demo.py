"""Synthetic captchas for trying a crawler against the server (``app.py --demo-captcha``)."""

from __future__ import annotations

import asyncio
import random

from fastapi import APIRouter, Query
from fastapi.responses import Response

from capforge.data.generate import Spec
from capforge.data.labels import label_from_name
from capforge.serve.inputs import RequestError
from capforge.serve.metrics import Metrics
from capforge.serve.registry import ModelRegistry, ServedModel
from capforge.serve.schemas import errors

SEEDS = 10**9


def spec_of(served: ServedModel) -> Spec:
    """What the model's gen_sample_by_captcha.py draws, as a generator spec."""
    mode = served.predictor.mode
    length = served.settings.CAPTCHA_LENGTH
    charset = "".join(s for s in mode.charset.symbols if len(s) == 1) or "0123456789"
    return mode.sample_spec(served.settings, charset, (length, length), None, None, "png")


def parts_of(spec: Spec, seed: int) -> dict[str, bytes]:
    """The images that come with demo captcha ``seed`` (none for most kinds)."""
    return spec.parts(seed, 0) if hasattr(spec, "parts") else {}


def router(registry: ModelRegistry, metrics: Metrics) -> APIRouter:
    """GET /demo/captcha and GET /demo/captcha/{part}."""
    routes = APIRouter(tags=["demo"])

    @routes.get("/demo/captcha", response_class=Response, responses={
        200: {"content": {"image/png": {}}, "description": "a PNG; its label in the X-Captcha-Label header, "
              "and where a slider's piece is, in X-Captcha-Piece"},
        **errors(400, 404, 422)})
    async def demo_captcha(model: str | None = None) -> Response:
        """A fresh synthetic captcha of the model's kind (what its gen_sample_by_captcha.py draws);
        its label (text, an angle, a gap's x) is in X-Captcha-Label. Where the captcha comes with
        other images, as a slider with its piece, each one's path is in a header (X-Captcha-Piece)."""
        served = registry.resolve(model)
        spec = spec_of(served)
        seed = random.SystemRandom().randrange(SEEDS)
        (name, data), parts = await asyncio.to_thread(lambda: (spec.files(seed, 0)[0], parts_of(spec, seed)))
        chosen = f"&model={served.name}" if model else ""
        return Response(data, media_type="image/png", headers={
            "X-Captcha-Label": label_from_name(name, "_"),  # every generator names its files <label>_<n>
            **{f"X-Captcha-{part.title()}": f"/demo/captcha/{part}?seed={seed}{chosen}" for part in parts}})

    @routes.get("/demo/captcha/{part}", response_class=Response, responses={
        200: {"content": {"image/png": {}}, "description": "the image named ``part`` of the demo captcha ``seed``"},
        **errors(400, 404, 422)})
    async def demo_part(part: str, seed: int = Query(ge=0, lt=SEEDS), model: str | None = None) -> Response:
        """An image that comes with demo captcha ``seed`` (the path its X-Captcha-<Part> header gave):
        a slider's piece, as a site serves it beside the background."""
        spec = spec_of(registry.resolve(model))
        parts = await asyncio.to_thread(parts_of, spec, seed)
        if part not in parts:
            raise RequestError(404, "unknown_part", f"the demo captchas of this model come with "
                               f"{', '.join(map(repr, parts)) or 'no other image'}; received {part!r}")
        return Response(parts[part], media_type="image/png")

    return routes
