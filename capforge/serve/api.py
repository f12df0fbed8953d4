"""The HTTP API: the routers of capforge.serve.routers (recognise, admin, feedback, review, demo)
behind one guard (body size, API key) and one error format. Every bad request gets a 4xx JSON
error with a stable code (404 and 405 included); nothing a client sends produces a 500.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from capforge.serve.inputs import RequestError, error_body
from capforge.serve.metrics import MULTIPROCESS_DIR, Metrics
from capforge.serve.registry import ModelRegistry
from capforge.serve.routers import admin, demo, feedback, recognise, review

__all__ = ["MULTIPROCESS_DIR", "ServeOptions", "create_app"]

# Starlette's own answers, in the project's error format.
HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


@dataclass
class ServeOptions:
    """How the server runs; see ``capforge serve --help``."""

    api_key: str = ""
    demo_captcha: bool = False
    max_body_bytes: int | None = None  # None: room for the largest MAX_IMAGE_BYTES in base64


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

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        metrics.errors.labels(code).inc()
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.errors.labels("invalid_parameter").inc()
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return JSONResponse(error_body("invalid_parameter", problems), status_code=422)

    app.add_middleware(Guard, options=options, metrics=metrics, registry=registry)
    for module in (recognise, admin, feedback, review, *((demo,) if options.demo_captcha else ())):
        app.include_router(module.router(registry, metrics))
    return app
