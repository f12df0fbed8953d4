"""The HTTP API: the routers of capforge.serve.routers (recognise, admin, feedback, review, demo)
behind one guard (body size, API keys, rate limit) and one error format. Every bad request gets a 4xx JSON
error with a stable code (404 and 405 included); nothing a client sends produces a 500.
"""

from __future__ import annotations

from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException

from capforge.serve.access import SESSION_COOKIE, ApiKeys, RateLimit
from capforge.serve.inputs import RequestError, error_body
from capforge.serve.metrics import MULTIPROCESS_DIR, Metrics
from capforge.serve.registry import ModelRegistry
from capforge.serve.routers import admin, demo, feedback, login, recognise, review
from capforge.serve.routers.login import login_url

__all__ = ["MULTIPROCESS_DIR", "ServeOptions", "create_app"]

# Starlette's own answers, in the project's error format.
HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


@dataclass
class ServeOptions:
    """How the server runs; see ``capforge serve --help``."""

    api_keys: str = ""  # NAME:KEY pairs, comma-separated, or one KEY (capforge.serve.access)
    rate_limit: float = 0.0  # API requests a second per key and worker process; 0: none
    demo_captcha: bool = False
    max_body_bytes: int | None = None  # None: room for the largest MAX_IMAGE_BYTES in base64


OPEN_PATHS = {"/healthz", "/login", "/logout"}  # answered without a key


class Guard:
    """Plain ASGI middleware (cheaper than BaseHTTPMiddleware): the body-size limit, the API
    keys (a browser without a session is sent to /login) and the per-key rate limit."""

    def __init__(self, app: Any, options: ServeOptions, keys: ApiKeys, metrics: Metrics,
                 registry: ModelRegistry) -> None:
        self.app, self.options, self.keys, self.metrics, self.registry = app, options, keys, metrics, registry
        self.limit = RateLimit(options.rate_limit)

    def body_limit(self) -> int:
        if self.options.max_body_bytes is not None:
            return self.options.max_body_bytes
        return self.registry.max_image_bytes * 4 // 3 + 65536

    def caller(self, scope: dict, headers: dict[bytes, bytes]) -> str | None:
        """The name of the key this request carries: a header, a Bearcat client's ?key=, or a
        person's session cookie."""
        bearer = headers.get(b"authorization", b"").decode("latin-1")
        for secret in (headers.get(b"x-api-key", b"").decode("latin-1"),
                       bearer[7:] if bearer.lower().startswith("bearer ") else "",
                       parse_qs(scope.get("query_string", b"").decode("latin-1")).get("key", [""])[0]
                       if scope["path"] == "/" and scope.get("method") == "POST" else ""):
            if secret and (name := self.keys.name_of(secret)):
                return name
        cookies = SimpleCookie(headers.get(b"cookie", b"").decode("latin-1"))
        session = cookies.get(SESSION_COOKIE)
        return self.keys.session_name(session.value) if session else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"").decode("latin-1")
        refusal, extra = None, {}
        if length.isdigit() and int(length) > self.body_limit():
            refusal = (413, "body_too_large", f"the request body is {length} bytes; the limit is "
                       f"{self.body_limit()}")
        elif self.keys and scope["path"] not in OPEN_PATHS:
            name = self.caller(scope, headers)
            if name is None and scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})
            if name is None and scope.get("method") == "GET" and b"text/html" in headers.get(b"accept", b""):
                wanted = scope["path"] + (f"?{scope['query_string'].decode('latin-1')}" if scope["query_string"] else "")
                return await RedirectResponse(login_url(wanted), status_code=303)(scope, receive, send)
            if name is None:
                refusal = (401, "unauthorized", "missing or wrong API key: send it as the X-API-Key header "
                           "(Bearcat clients: POST /?key=...; people: log in at /login)")
            else:
                self.metrics.keys.labels(name).inc()
                wait = self.limit.wait(name) if scope["path"].startswith("/api/") or scope["path"] == "/" else 0
                if wait:
                    refusal, extra = (429, "rate_limited", f"the key {name!r} is over its "
                                      f"{self.options.rate_limit:g} requests a second; retry in {wait} s"), \
                        {"Retry-After": str(wait)}
        if refusal is None:
            return await self.app(scope, receive, send)
        self.metrics.errors.labels(refusal[1]).inc()
        await JSONResponse(error_body(*refusal[1:]), status_code=refusal[0], headers=extra)(scope, receive, send)


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

    keys = ApiKeys.parse(options.api_keys)
    app.add_middleware(Guard, options=options, keys=keys, metrics=metrics, registry=registry)
    for module in (recognise, admin, feedback, review, *((demo,) if options.demo_captcha else ())):
        app.include_router(module.router(registry, metrics))
    if keys:
        app.include_router(login.router(keys))
    return app
