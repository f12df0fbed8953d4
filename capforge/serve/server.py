"""``capforge serve`` / app.py: one uvicorn server with the API and the Gradio page."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from capforge.errors import SettingsError
from capforge.serve.access import ApiKeys
from capforge.serve.api import MULTIPROCESS_DIR, ServeOptions, create_app
from capforge.serve.registry import ModelRegistry

CONFIG_ENV = "CAPFORGE_SERVE_CONFIG"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_app(config: dict[str, Any]) -> Any:
    """The full app (API + Gradio page at /ui) from a JSON-able config."""
    import gradio as gr

    from capforge.serve.ui import REVIEW_KEYS, build_ui  # lazily, like Gradio: the API alone starts faster

    registry = ModelRegistry(Path(config["works"]), config.get("models"), config.get("overrides"))
    if not registry.models:
        raise SettingsError(f"no exported model under {config['works']}"
                            + (f" named {', '.join(config['models'])}" if config.get("models") else "")
                            + "; run save_model.py first")
    options = ServeOptions(api_keys=config.get("api_keys", ""), rate_limit=config.get("rate_limit", 0.0),
                           demo_captcha=config.get("demo_captcha", False))
    app = create_app(registry, options)
    page = build_ui(registry)
    # root_path: without it the files that unqueued events return (report pictures, the captcha
    # under review) are linked without the /ui prefix and do not load.
    app = gr.mount_gradio_app(app, page, path="/ui", allowed_paths=[str(config["works"])], head=REVIEW_KEYS,
                              root_path="/ui")
    slow_down_idle_polling(page)
    return app


def slow_down_idle_polling(page: Any) -> None:
    """Gradio's event queue wakes the shared event loop every millisecond while idle, which costs
    an idle server CPU (bench/results/defaults.md); every 50 ms is quick enough for a person."""
    queue = getattr(page, "_queue", None)
    if queue is not None and hasattr(queue, "sleep_when_free"):
        queue.sleep_when_free = max(queue.sleep_when_free, 0.05)
        queue.progress_update_sleep_when_free = max(queue.progress_update_sleep_when_free, 0.1)


def app_from_env() -> Any:
    """Factory used by uvicorn's worker processes (--workers > 1)."""
    return build_app(json.loads(os.environ[CONFIG_ENV]))


DEFAULT_MAX_WORKERS = 4  # each worker holds the models and Gradio (~200 MiB): more only when asked


def default_workers() -> int:
    """Server processes when --workers is not given: one per core, at most DEFAULT_MAX_WORKERS."""
    return max(1, min(os.cpu_count() or 1, DEFAULT_MAX_WORKERS))


def serve(config: dict[str, Any], host: str, port: int, workers: int | None = None) -> None:
    """Run uvicorn until interrupted, with ``workers`` processes (None: :func:`default_workers`)."""
    import uvicorn

    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise SettingsError(f"--workers {workers}: the server needs at least 1 worker process")
    config["api_keys"] = config.get("api_keys") or os.environ.get("CAPFORGE_API_KEY", "")
    keys = ApiKeys.parse(config["api_keys"])  # a malformed list stops here, with what is wrong
    if config.get("rate_limit", 0) < 0:
        raise SettingsError(f"--rate-limit {config['rate_limit']}: give requests a second per key, 0 for no limit")
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SettingsError(f"cannot listen on {host}:{port} ({exc.strerror}); pass another --port") from None
    if not is_loopback(host) and not keys:
        raise SettingsError(f"--host {host} is reachable from other machines; set an API key with "
                            "--api-key or CAPFORGE_API_KEY (or bind to 127.0.0.1)")
    where = f"on http://{host}:{port}/ (page /ui/, API /api/v1/recognize, docs /docs)"
    if workers > 1:
        os.environ[CONFIG_ENV] = json.dumps(config)
        print(f"serving {where} with {workers} worker processes", flush=True)
        # each worker's metrics live in files here, so /metrics adds up every worker's, whichever answers
        with tempfile.TemporaryDirectory(prefix="capforge-metrics-") as shared:
            os.environ[MULTIPROCESS_DIR] = shared
            uvicorn.run("capforge.serve.server:app_from_env", factory=True, host=host, port=port,
                        workers=workers, log_level="warning", access_log=False)
    else:
        app = build_app(config)
        print(f"serving {', '.join(sorted(app.state.registry.models))} {where}", flush=True)
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
