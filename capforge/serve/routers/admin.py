"""What is served and how it is doing: the page redirect, models, health and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, RedirectResponse
from prometheus_client import CONTENT_TYPE_LATEST

from capforge.serve.metrics import Metrics
from capforge.serve.registry import ModelRegistry
from capforge.serve.schemas import Health, ModelInfo, errors


def router(registry: ModelRegistry, metrics: Metrics) -> APIRouter:
    """GET /, /api/v1/models, /healthz and /metrics."""
    routes = APIRouter(tags=["models, health, metrics"])

    @routes.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        """People land on the Gradio page."""
        return RedirectResponse("/ui/")

    @routes.get("/api/v1/models", response_model=list[ModelInfo], responses=errors(401))
    async def models() -> list[dict[str, Any]]:
        """Every served model: its mode, charset, input and settings."""
        registry.refresh()
        return [m.describe() for m in registry.models.values()]

    @routes.get("/healthz", response_model=Health)
    async def healthz() -> dict[str, Any]:
        """Whether the server answers, and which models it serves (no API key needed)."""
        return {"status": "ok", "models": sorted(registry.models)}

    @routes.get("/metrics", response_class=PlainTextResponse, responses=errors(401))
    async def prometheus() -> PlainTextResponse:
        """Prometheus metrics, summed over every worker process."""
        return PlainTextResponse(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return routes
