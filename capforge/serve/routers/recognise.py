"""Recognition routes: base64 JSON, a multipart upload, and the Bearcat_captcha form protocol."""

from __future__ import annotations

import time
from typing import Any, Mapping

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from capforge.answers import every_input, parse_inputs
from capforge.errors import InputError
from capforge.serve.inputs import RequestError, checked_bytes, image_bytes, json_body, model_name, required
from capforge.serve.metrics import Metrics
from capforge.serve.recognition import recognize
from capforge.serve.registry import ModelRegistry, ServedModel
from capforge.serve.schemas import BearcatAnswer, errors, form_body, json_request, with_mode_fields


BEARCAT_OK, BEARCAT_NO_IMG, BEARCAT_BAD = "200", "5004", "5005"


def _inputs(model: ServedModel, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs beside the image that ``model``'s mode reads, parsed from a request's ``fields``
    (base64 text in JSON; base64 text or a file's bytes in a form)."""
    limit = model.settings.MAX_IMAGE_BYTES

    def image_from(value: Any) -> bytes:
        if isinstance(value, bytes):
            return checked_bytes(value, limit)
        if not isinstance(value, str):
            raise RequestError(400, "invalid_base64", f"an image beside 'image' must be base64 text; received "
                               f"{type(value).__name__}")
        return image_bytes(value, limit)

    try:
        return parse_inputs(model.predictor.mode, fields, image_from)
    except InputError as exc:
        raise RequestError(400, exc.code, exc.message) from None


def router(registry: ModelRegistry, metrics: Metrics) -> APIRouter:
    """POST /api/v1/recognize, /api/v1/recognize/file and / (Bearcat) (one function: the
    handlers are closures over ``registry`` and ``metrics``)."""
    routes = APIRouter(tags=["recognise"])
    RecognizeRequest, RecognizeAnswer = with_mode_fields()  # noqa: N806 - classes, named as such
    beside = {name: {"type": "string", "format": "binary"} if kind == "image" else
              {"type": "number" if kind == "number" else "string"} for name, kind in every_input().items()}

    @routes.post("/api/v1/recognize", response_model=RecognizeAnswer, openapi_extra=json_request(RecognizeRequest),
                 responses=errors(400, 401, 404, 413, 415, 422))
    async def recognize_json(request: Request) -> JSONResponse:
        """Recognise a base64 image (or data URL): {"image": "...", "model": "site"}; click captchas
        also take "prompt" (the targets to click, in order) and answer with "clicks"."""
        metrics.requests.labels("recognize").inc()
        with metrics.latency.time():
            body = await json_body(request)
            model = registry.resolve(model_name(body.get("model")))
            image = required(body, "image")
            if not isinstance(image, str):
                raise RequestError(400, "invalid_base64", "'image' must be a base64 string")
            data = image_bytes(image, model.settings.MAX_IMAGE_BYTES)
            inputs = _inputs(model, body)
            return JSONResponse(await recognize(model, data, body.get("prompt"), metrics, inputs))

    @routes.post("/api/v1/recognize/file", response_model=RecognizeAnswer, responses=errors(400, 401, 404, 413, 415, 422),
                 openapi_extra=form_body({"file": {"type": "string", "format": "binary"}, "model": {"type": "string"},
                                          "prompt": {"type": "string"}, **beside}, ["file"]))
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
        readable = every_input()
        fields = {name: await value.read(model.settings.MAX_IMAGE_BYTES + 1) if hasattr(value, "read") else value
                  for name, value in form.items() if name in readable}
        inputs = _inputs(model, fields)
        return JSONResponse(await recognize(model, checked_bytes(data, model.settings.MAX_IMAGE_BYTES),
                                            form.get("prompt"), metrics, inputs))

    @routes.post("/", response_model=BearcatAnswer, responses=errors(401, 413),
                 openapi_extra=form_body({"img": {"type": "string", "description": "the image in base64"},
                                          "model": {"type": "string"}}, ["img"]))
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
            answer = await recognize(model, image_bytes(img, model.settings.MAX_IMAGE_BYTES), metrics=metrics)
        except RequestError as exc:
            metrics.errors.labels(exc.code).inc()
            return JSONResponse({"return_code": BEARCAT_BAD, "return_info": exc.message, "result": None,
                                 "recognition_rate": 0, "time": 0})
        return JSONResponse({"return_code": BEARCAT_OK, "return_info": "处理成功", "result": answer["result"],
                             "recognition_rate": answer["confidence"],
                             "time": round((time.perf_counter() - started) * 1000, 3)})

    return routes
