"""The Python API as a notebook uses it: Recognizer answers like the HTTP API; the steps run as
functions."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from capforge.errors import WorkspaceError


def test_recognizer_answers_like_the_http_api_from_any_kind_of_image(served_works: Path) -> None:
    from capforge import Recognizer
    from capforge.serve.api import create_app
    from capforge.serve.registry import ModelRegistry

    path = sorted((served_works / "digits" / "data" / "test").glob("*.png"))[0]
    data = path.read_bytes()
    http = TestClient(create_app(ModelRegistry(served_works))).post(
        "/api/v1/recognize", json={"image": base64.b64encode(data).decode()}).json()
    recognizer = Recognizer(served_works / "digits")
    for image in (data, path, str(path), Image.open(path), base64.b64encode(data).decode(),
                  "data:image/png;base64," + base64.b64encode(data).decode()):
        answer = recognizer.recognize(image)
        assert {k: answer[k] for k in ("model", "result", "confidence", "chars", "accepted")} == \
            {k: http[k] for k in ("model", "result", "confidence", "chars", "accepted")}, type(image)
        assert answer["request_id"] == (None if isinstance(image, Image.Image) else http["request_id"])
        assert answer["time_ms"] > 0
    exported = Recognizer(served_works / "digits" / "exports" / "current")  # an export folder alone
    assert exported.recognize(data)["result"] == http["result"] and exported.name == "digits"


def test_recognizer_without_an_export_says_what_to_give(tmp_path: Path) -> None:
    from capforge import Recognizer

    with pytest.raises(WorkspaceError, match="holds no export"):
        Recognizer(tmp_path)


def test_the_steps_run_as_functions(tmp_path: Path) -> None:
    from capforge import Recognizer, workflow
    from capforge.workspace import create_workspace

    from clean_data import fill_pool

    ws = create_workspace(tmp_path / "works", "nb", "CTC_TINY")
    fill_pool(ws.pool, 120, lengths=(2, 3))
    overrides = {"IMAGE_HEIGHT": 32, "IMAGE_WIDTH": 96, "CHARSET": "0123456789", "BATCH_SIZE": 16}
    report = workflow.check(ws.root, **overrides)
    assert report.counts == {"pool": 120} and not report.findings
    assert sum(workflow.split(ws.root, **overrides).counts.values()) == 120
    assert workflow.pack(ws.root, **overrides)["splits"]["train"]["count"] == 96
    summary = workflow.train(ws.root, EPOCHS=2, **overrides)
    assert summary["epochs_run"] == 2
    assert workflow.export(ws.root, **overrides)["mode"] == "CTC_TINY"
    assert workflow.evaluate(ws.root, **overrides)["images"] == 12
    assert Recognizer(ws.root).recognize(next(ws.split_dir("test").glob("*.png")))["model"] == "nb"
