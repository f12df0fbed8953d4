"""The HTTP API: recognition (JSON, multipart, Bearcat-compatible form), models, health,
metrics, feedback and the demo captcha route. Every bad request gets a 4xx JSON error with a
stable code; nothing a client sends produces a 500.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

from capforge.data.images import open_image
from capforge.errors import ImageError, ImageTooLargeError, TargetNotFound
from capforge.modes import accepted
from capforge.serve.inputs import RequestError, checked_bytes, image_bytes
from capforge.serve.registry import ModelRegistry, ServedModel

BEARCAT_OK, BEARCAT_NO_IMG, BEARCAT_BAD = "200", "5004", "5005"
# Cached with a detection answer, never sent: every box down to a low score, so a prompted
# target that no box above DETECTION_THRESHOLD matches can still be clicked.
CANDIDATES = "_candidates"
# Where worker processes keep their metrics for /metrics to add up (prometheus_client's variable).
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


@dataclass
class ServeOptions:
    """How the server runs; see ``capforge serve --help``."""

    api_key: str = ""
    demo_captcha: bool = False
    max_body_bytes: int | None = None  # None: room for the largest MAX_IMAGE_BYTES in base64


class Metrics:
    """Prometheus metrics of one app (own registry, so several apps can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("capforge_requests", "Requests by route", ["route"], registry=self.registry)
        self.errors = Counter("capforge_errors", "Error answers by code", ["code"], registry=self.registry)
        self.latency = Histogram("capforge_latency_seconds", "Recognition latency", registry=self.registry,
                                 buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2))
        self.batch = Histogram("capforge_batch_size", "Images per model call", registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128))

    def exposition(self) -> bytes:
        """The Prometheus text: this app's metrics, or the sum over every worker process when
        ``capforge serve --workers N`` shares them through PROMETHEUS_MULTIPROC_DIR."""
        if os.environ.get(MULTIPROCESS_DIR):
            combined = CollectorRegistry()
            multiprocess.MultiProcessCollector(combined)
            return generate_latest(combined)
        return generate_latest(self.registry)


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


class Guard:
    """Plain ASGI middleware (cheaper than BaseHTTPMiddleware): body-size limit and API key."""

    def __init__(self, app: Any, options: ServeOptions, metrics: Metrics, registry: ModelRegistry) -> None:
        self.app, self.options, self.metrics, self.registry = app, options, metrics, registry

    def body_limit(self) -> int:
        if self.options.max_body_bytes is not None:
            return self.options.max_body_bytes
        return self.registry.max_image_bytes * 4 // 3 + 65536

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"").decode("latin-1")
        refusal = None
        if length.isdigit() and int(length) > self.body_limit():
            refusal = (413, "body_too_large", f"the request body is {length} bytes; the limit is "
                       f"{self.body_limit()}")
        elif self.options.api_key and scope["path"] != "/healthz" and \
                headers.get(b"x-api-key", b"").decode("latin-1") != self.options.api_key:
            refusal = (401, "unauthorized", "missing or wrong X-API-Key header")
        if refusal is None:
            return await self.app(scope, receive, send)
        self.metrics.errors.labels(refusal[1]).inc()
        await JSONResponse(error_body(*refusal[1:]), status_code=refusal[0])(scope, receive, send)


def clicks_for(model: ServedModel, data: bytes, boxes: list[dict[str, Any]], prompt: Any) -> list[dict[str, Any]]:
    """Click points for ``prompt`` in its order, chosen among ``boxes`` (detection models only)."""
    if not model.predictor.mode.takes_prompt:
        raise RequestError(400, "prompt_not_supported", f"'prompt' is for click-captcha (EFFICIENTDET) models; "
                           f"{model.name} is {model.predictor.mode.name}")
    if not (isinstance(prompt, str) or isinstance(prompt, list) and all(isinstance(p, str) for p in prompt)) \
            or not prompt or len(prompt) > 64:
        raise RequestError(400, "invalid_prompt", "'prompt' must be the targets to click in order: a string "
                           "('abc', or 'cat,dog') or a list of names, at most 64")
    try:
        return model.predictor.mode.clicks(open_image(data).convert("RGB"), boxes, prompt, model.recognizer)
    except TargetNotFound as exc:
        raise RequestError(422, "target_not_found", str(exc)) from None


async def recognize(model: ServedModel, data: bytes, prompt: Any = None) -> dict[str, Any]:
    """Decode and preprocess, batch through onnxruntime, decode; cached by content. With a
    ``prompt`` (detection), add the click points in the prompt's order."""
    started = time.perf_counter()
    answer = model.cached(data)
    if answer is None:
        predictor = model.predictor
        try:
            # Inline: a captcha decodes and resizes in well under a millisecond, less than a thread hop.
            array, placed = predictor.placed(data)
        except ImageError as exc:
            too_large = isinstance(exc, ImageTooLargeError)
            raise RequestError(413 if too_large else 400, "image_too_large" if too_large else "invalid_image",
                               str(exc).replace("image bytes: ", "")) from None
        probs = await model.batcher.submit(array)
        prediction = predictor.answer(probs, placed)
        answer = {"model": model.name, **prediction.to_dict()}
        if prediction.candidates is not None:
            answer[CANDIDATES] = prediction.candidates
        model.remember(data, answer)
    candidates = answer.get(CANDIDATES, [])
    if CANDIDATES in answer:  # detection only: text answers are not copied
        answer = {k: v for k, v in answer.items() if k != CANDIDATES}
    if prompt is not None:  # in a thread: a CLICK_RECOGNIZER runs a second model on the crops
        # the detector's own classes may fall back on weaker boxes; a recogniser reads served boxes only
        boxes = answer.get("boxes", []) if model.recognizer else candidates
        answer["clicks"] = await asyncio.to_thread(clicks_for, model, data, boxes, prompt)
    return {**answer, "accepted": accepted(answer["confidence"], model.settings.MIN_CONFIDENCE),
            "time_ms": round((time.perf_counter() - started) * 1000, 3)}


def create_app(registry: ModelRegistry, options: ServeOptions | None = None) -> FastAPI:
    """The FastAPI app serving ``registry``."""
    options = options or ServeOptions()
    metrics = Metrics()
    registry.observe_batch = metrics.batch.observe
    for model in registry.models.values():
        model.batcher.observe = metrics.batch.observe
    app = FastAPI(title="capforge", description="Captcha recognition: POST base64 images, get text.")
    app.state.registry, app.state.metrics = registry, metrics

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> JSONResponse:
        metrics.errors.labels(exc.code).inc()
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status)

    app.add_middleware(Guard, options=options, metrics=metrics, registry=registry)

    async def json_body(request: Request) -> dict[str, Any]:
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

    def field(body: dict[str, Any], name: str) -> Any:
        if name not in body:
            raise RequestError(422, "missing_field", f"the field {name!r} is required")
        return body[name]

    def model_name(value: Any) -> str | None:
        if value is not None and not isinstance(value, str):
            raise RequestError(400, "invalid_model_name", "'model' must be a string")
        return value

    @app.post("/api/v1/recognize")
    async def recognize_json(request: Request) -> JSONResponse:
        """Recognise a base64 image (or data URL): {"image": "...", "model": "site"}; click captchas
        also take "prompt" (the targets to click, in order) and answer with "clicks"."""
        metrics.requests.labels("recognize").inc()
        with metrics.latency.time():
            body = await json_body(request)
            model = registry.resolve(model_name(body.get("model")))
            image = field(body, "image")
            if not isinstance(image, str):
                raise RequestError(400, "invalid_base64", "'image' must be a base64 string")
            return JSONResponse(await recognize(model, image_bytes(image, model.settings.MAX_IMAGE_BYTES),
                                                body.get("prompt")))

    @app.post("/api/v1/recognize/file")
    async def recognize_file(request: Request) -> JSONResponse:
        """Recognise an uploaded file: multipart form with 'file' (and optional 'model')."""
        metrics.requests.labels("recognize_file").inc()
        if "multipart/form-data" not in request.headers.get("content-type", ""):
            raise RequestError(415, "wrong_content_type", "send multipart/form-data with a 'file' field")
        try:
            form = await request.form()
        except Exception:  # a malformed multipart body is the client's mistake
            raise RequestError(400, "invalid_form", "the multipart body could not be parsed") from None
        model = registry.resolve(model_name(form.get("model")))
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise RequestError(422, "missing_field", "the multipart field 'file' is required")
        data = await upload.read(model.settings.MAX_IMAGE_BYTES + 1)
        return JSONResponse(await recognize(model, checked_bytes(data, model.settings.MAX_IMAGE_BYTES),
                                            form.get("prompt")))

    @app.post("/")
    async def bearcat_compatible(request: Request) -> JSONResponse:
        """The Bearcat_captcha protocol: form field 'img' (base64); answers with return_code."""
        metrics.requests.labels("bearcat").inc()
        started = time.perf_counter()
        try:
            form = await request.form()
        except Exception:  # not a form at all: the same answer as a form without img
            form = {}
        img = form.get("img")
        if not img or not isinstance(img, str):
            metrics.errors.labels("bearcat_no_img").inc()
            return JSONResponse({"return_code": BEARCAT_NO_IMG, "return_info": "参数错误，没有img属性",
                                 "result": None, "recognition_rate": 0, "time": 0})
        try:
            model = registry.resolve(model_name(form.get("model")))
            answer = await recognize(model, image_bytes(img, model.settings.MAX_IMAGE_BYTES))
        except RequestError as exc:
            metrics.errors.labels(exc.code).inc()
            return JSONResponse({"return_code": BEARCAT_BAD, "return_info": exc.message, "result": None,
                                 "recognition_rate": 0, "time": 0})
        return JSONResponse({"return_code": BEARCAT_OK, "return_info": "处理成功", "result": answer["result"],
                             "recognition_rate": answer["confidence"],
                             "time": round((time.perf_counter() - started) * 1000, 3)})

    @app.get("/")
    async def home() -> RedirectResponse:
        """People land on the Gradio page."""
        return RedirectResponse("/ui/")

    @app.get("/api/v1/models")
    async def models() -> list[dict[str, Any]]:
        registry.refresh()
        return [m.describe() for m in registry.models.values()]

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "models": sorted(registry.models)}

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/api/v1/feedback")
    async def feedback(request: Request) -> dict[str, Any]:
        """Store a corrected sample as data/feedback/<label>_<hash>.png for the next training."""
        metrics.requests.labels("feedback").inc()
        body = await json_body(request)
        model = registry.resolve(model_name(body.get("model")))
        if not model.settings.FEEDBACK:
            raise RequestError(403, "feedback_disabled", "feedback is off; set FEEDBACK = True in settings.py")
        label = field(body, "label")
        if not isinstance(label, str) or not 0 < len(label) <= 64 or any(c in label for c in "/\\\0_-.") \
                or not label.isprintable():
            raise RequestError(400, "invalid_label", "'label' must be 1-64 printable characters without "
                               "'/', '\\', '_', '-' or '.'")
        data = image_bytes(field(body, "image"), model.settings.MAX_IMAGE_BYTES)
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

    if options.demo_captcha:
        @app.get("/demo/captcha")
        async def demo_captcha(model: str | None = None) -> Response:
            """A fresh synthetic captcha of the model's kind; its label is in X-Captcha-Label."""
            import random

            from capforge.data.generate import CaptchaSpec, render  # lazily: only demo servers draw captchas

            served = registry.resolve(model)
            symbols = served.predictor.mode.charset.symbols
            length = served.settings.CAPTCHA_LENGTH
            spec = CaptchaSpec("".join(s for s in symbols if len(s) == 1), length, length)
            seed = random.SystemRandom().randrange(10**9)
            rng = random.Random(seed)
            label = "".join(rng.choice(spec.charset) for _ in range(length))
            data = await asyncio.to_thread(render, spec, label, seed, 0)
            return Response(data, media_type="image/png", headers={"X-Captcha-Label": label})

    return app
