"""A fuzzer against the live server: schemathesis drives every route of the OpenAPI schema with
generated requests, valid and invalid, bounded in count; no answer may be a 5xx, and the server
answers a good request afterwards."""

from __future__ import annotations

import base64
from pathlib import Path

import requests

from conftest import running_app

EXAMPLES_PER_ROUTE = 25  # per route and per kind (valid, invalid): bounded, so the suite stays quick


def test_fuzzing_every_route_finds_no_server_error(served_works: Path) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation import GenerationMode

    with running_app(served_works / "digits", "--demo-captcha", "--workers", "1") as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.path for op in operations} >= {"/api/v1/recognize", "/api/v1/recognize/file", "/",
                                                 "/api/v1/feedback", "/api/v1/models", "/healthz",
                                                 "/metrics", "/demo/captcha", "/demo/captcha/{part}"}
        server_errors: list[str] = []
        calls = {"n": 0}
        for operation in operations:
            for mode in GenerationMode:
                @settings(max_examples=EXAMPLES_PER_ROUTE, deadline=None, database=None, derandomize=True,
                          suppress_health_check=list(HealthCheck))
                @given(case=operation.as_strategy(generation_mode=mode))
                def fuzz(case) -> None:
                    response = case.call(base_url=url, timeout=30)
                    calls["n"] += 1
                    if response.status_code >= 500:
                        server_errors.append(f"{case.method} {case.path} -> {response.status_code}: "
                                             f"{response.text[:200]}")

                try:
                    fuzz()
                except Unsatisfiable:  # a route without parameters or body has no invalid request
                    assert mode is GenerationMode.NEGATIVE, operation.path
        assert calls["n"] >= len(operations) * 5 and not server_errors, server_errors[:5]
        image = next((served_works / "digits" / "data" / "test").glob("*.png")).read_bytes()
        after = requests.post(f"{url}/api/v1/recognize", json={"image": base64.b64encode(image).decode()}, timeout=30)
        assert after.status_code == 200 and after.json()["result"], after.text
