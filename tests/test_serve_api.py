"""The HTTP API on a real tiny exported model: every route and every bad input."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from capforge.serve import registry as registry_module
from capforge.serve.api import ServeOptions, create_app
from capforge.serve.predictor import Predictor
from capforge.serve.registry import ModelRegistry



@pytest.fixture
def works(served_works: Path) -> Path:
    return served_works


def client(works: Path, *overrides: str, names: list[str] | None = None, **options) -> TestClient:
    return TestClient(create_app(ModelRegistry(works, names, list(overrides)), ServeOptions(**options)))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sample(works: Path) -> bytes:
    return next((works / "digits" / "data" / "test").glob("*.png")).read_bytes()


def held_out_images(works: Path) -> list[Path]:
    return sorted((works / "digits" / "data" / "test").glob("*.png"))


def api_answer(works: Path, path: Path) -> str:
    return client(works).post("/api/v1/recognize", json={"image": b64(path.read_bytes())}).json()["result"]


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_recognize_answers_like_the_predictor(works: Path) -> None:
    data = sample(works)
    expected = Predictor(works / "digits" / "exports" / "current").predict([data])[0]
    response = client(works).post("/api/v1/recognize", json={"image": b64(data)})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "digits" and body["result"] == expected.text
    assert sum(api_answer(works, p) == p.name.split("_")[0] for p in held_out_images(works)) >= 0.8 * len(held_out_images(works))
    assert body["confidence"] == pytest.approx(expected.confidence, abs=1e-5)
    assert [c["char"] for c in body["chars"]] == list(expected.text)
    assert body["accepted"] is True and body["time_ms"] >= 0
    as_url = client(works).post("/api/v1/recognize", json={"image": "data:image/png;base64," + b64(data)})
    assert as_url.status_code == 200 and as_url.json()["result"] == expected.text
    wrapped = base64.encodebytes(data).decode()  # MIME style: a newline every 76 characters
    assert "\n" in wrapped.strip()
    as_wrapped = client(works).post("/api/v1/recognize", json={"image": wrapped})
    assert as_wrapped.status_code == 200 and as_wrapped.json()["result"] == expected.text


BAD = [
    ({"image": "not base64 at all!"}, 400, "invalid_base64"),
    ({"image": ""}, 422, "missing_image"),
    ({"image": b64(b"hello, I am text")}, 400, "invalid_image"),
    ({"image": "data:text/plain;base64," + b64(b"hi")}, 415, "unsupported_media_type"),
    ({"image": 12}, 400, "invalid_base64"),
    ({}, 422, "missing_field"),
    ({"image": "aGk=", "model": "nope"}, 404, "unknown_model"),
    ({"image": "aGk=", "model": "../../etc"}, 400, "invalid_model_name"),
]


def test_every_bad_input_is_a_4xx_with_a_code_and_the_server_carries_on(works: Path) -> None:
    api = client(works, "MAX_IMAGE_BYTES=50000")
    good = {"image": b64(sample(works))}
    truncated = sample(works)[:200]
    huge_pixels = png(Image.new("1", (8000, 8000)))  # tiny file, 64 million pixels
    cases = BAD + [({"image": b64(truncated)}, 400, "invalid_image"),
                   ({"image": b64(b"\0" * 60000)}, 413, "image_too_large"),
                   ({"image": b64(huge_pixels)}, 413, "image_too_large")]
    for body, status, code in cases:
        response = api.post("/api/v1/recognize", json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["code"] == code
        assert response.json()["error"]["message"]
        assert api.post("/api/v1/recognize", json=good).status_code == 200
    wrong_type = api.post("/api/v1/recognize", content=b"image=abc", headers={"content-type": "text/plain"})
    assert wrong_type.status_code == 415 and wrong_type.json()["error"]["code"] == "wrong_content_type"
    broken = api.post("/api/v1/recognize", content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_json"
    metrics = api.get("/metrics").text
    assert 'capforge_errors_total{code="invalid_base64"}' in metrics


def test_file_upload_and_bearcat_compatible_route(works: Path) -> None:
    api = client(works)
    data = sample(works)
    expected = api.post("/api/v1/recognize", json={"image": b64(data)}).json()["result"]
    upload = api.post("/api/v1/recognize/file", files={"file": ("x.png", data, "image/png")})
    assert upload.status_code == 200 and upload.json()["result"] == expected
    missing = api.post("/api/v1/recognize/file", files={"model": (None, "digits")})
    assert missing.status_code == 422 and missing.json()["error"]["code"] == "missing_field"
    as_form = api.post("/api/v1/recognize/file", data={"model": "digits"})
    assert as_form.status_code == 415 and as_form.json()["error"]["code"] == "wrong_content_type"
    compat = api.post("/", data={"img": b64(data)}).json()
    assert compat["return_code"] == "200" and compat["return_info"] == "处理成功"
    assert compat["result"] == expected and 0 <= compat["recognition_rate"] <= 1
    assert api.post("/", data={}).json() == {"return_code": "5004", "return_info": "参数错误，没有img属性",
                                             "result": None, "recognition_rate": 0, "time": 0}
    assert api.post("/", data={"img": "%%%"}).json()["return_code"] == "5005"


def test_models_health_metrics_docs(works: Path) -> None:
    api = client(works)
    api.post("/api/v1/recognize", json={"image": b64(sample(works))})
    models = api.get("/api/v1/models").json()
    assert models[0]["name"] == "digits" and models[0]["mode"] == "CTC_TINY"
    assert models[0]["input_size"] == [32, 96, 1] and models[0]["charset_size"] == 10
    assert api.get("/healthz").json() == {"status": "ok", "models": ["digits"]}
    metrics = api.get("/metrics")
    assert metrics.status_code == 200
    assert 'capforge_requests_total{route="recognize"} 1.0' in metrics.text
    assert "capforge_batch_size_bucket" in metrics.text and "capforge_latency_seconds_bucket" in metrics.text
    assert api.get("/docs").status_code == 200


def test_several_models_routing_and_hot_reload(works: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    many = tmp_path / "works"
    for name in ("alpha", "beta"):
        shutil.copytree(works / "digits", many / name)
    monkeypatch.setattr(registry_module, "RELOAD_CHECK_SECONDS", 0.0)
    api = client(many)
    image = b64(sample(works))
    refused = api.post("/api/v1/recognize", json={"image": image})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "model_required"
    assert "alpha, beta" in refused.json()["error"]["message"]
    assert api.post("/api/v1/recognize", json={"image": image, "model": "beta"}).json()["model"] == "beta"
    only_alpha = client(many, names=["alpha"])
    assert only_alpha.post("/api/v1/recognize", json={"image": image}).json()["model"] == "alpha"
    manifest_path = many / "beta" / "exports" / "current" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["exported_at"] = "2099-01-01T00:00:00"
    manifest_path.write_text(json.dumps(manifest))
    shutil.copytree(works / "digits", many / "gamma")  # a new export appears too
    listed = {m["name"]: m["exported_at"] for m in api.get("/api/v1/models").json()}
    assert listed["beta"] == "2099-01-01T00:00:00" and "gamma" in listed


def test_concurrent_requests_are_batched_and_answer_as_sequential_ones(works: Path) -> None:
    images = [p.read_bytes() for p in sorted((works / "digits" / "data" / "train").glob("*.png"))[:40]]
    app = create_app(ModelRegistry(works, None, ["BATCH_WAIT_MS=20", "CACHE_SIZE=0"]))
    sequential = [TestClient(app).post("/api/v1/recognize", json={"image": b64(d)}).json()["result"]
                  for d in images]

    async def together() -> list[str]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            answers = await asyncio.gather(*(c.post("/api/v1/recognize", json={"image": b64(d)}) for d in images))
        return [a.json()["result"] for a in answers]

    assert asyncio.run(together()) == sequential
    sizes = app.state.metrics.batch.collect()[0].samples
    count = next(s.value for s in sizes if s.name.endswith("_count"))
    total = next(s.value for s in sizes if s.name.endswith("_sum"))
    assert total == 2 * len(images) and count < 2 * len(images)  # some calls held several images


def test_cache_and_confidence_gate(works: Path) -> None:
    app = create_app(ModelRegistry(works, None, ["CACHE_SIZE=1"]))
    api = TestClient(app)
    model = app.state.registry.models["digits"]
    image = b64(sample(works))
    first = api.post("/api/v1/recognize", json={"image": image}).json()
    second = api.post("/api/v1/recognize", json={"image": image}).json()
    assert first["result"] == second["result"] and len(model.cache) == 1
    def noise(seed: int) -> str:
        return b64(png(Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 96), dtype=np.uint8))))

    # the first noise image answered with a plausible text (an implausible one has confidence 0)
    confidence, noise = next((c, n) for n in map(noise, range(20))
                             if (c := api.post("/api/v1/recognize", json={"image": n}).json()["confidence"]) > 0)
    assert len(model.cache) == 1  # bounded
    assert confidence < 1.0
    for threshold, accepted in ((confidence, True), ((confidence + 1.0) / 2, False)):
        gated = client(works, f"MIN_CONFIDENCE={threshold!r}").post("/api/v1/recognize", json={"image": noise})
        assert gated.json()["accepted"] is accepted, threshold


def test_an_answer_that_cannot_be_right_is_never_accepted(works: Path) -> None:
    manifest = json.loads((works / "digits" / "exports" / "current" / "manifest.json").read_text())
    assert manifest["label_lengths"] == [2, 4]  # the served model learned labels of 2 to 4 digits
    white = b64(png(Image.new("RGB", (1, 1), "white")))
    for threshold in ("0.0", "0.5"):
        response = client(works, f"MIN_CONFIDENCE={threshold}").post("/api/v1/recognize", json={"image": white})
        assert response.status_code == 200
        body = response.json()
        assert body["result"] == "" and body["confidence"] == 0.0 and body["accepted"] is False, body


def test_an_answer_too_long_for_the_model_is_served_as_its_likeliest_possible_reading(works: Path) -> None:
    predictor = Predictor(works / "digits" / "exports" / "current")
    assert predictor.label_lengths == [2, 4]
    steps, size = predictor.probabilities(predictor.inputs([sample(works)])).shape[1:]
    blank, ids = predictor.mode.charset.blank, predictor.mode.charset.encode("12345")

    def five_digits(blank_share: float) -> np.ndarray:
        """Outputs spelling 12345, the fifth digit's step read as blank with ``blank_share``."""
        outputs = np.full((1, steps, size), 1e-4)
        for step, symbol in enumerate([ids[0], blank, ids[1], blank, ids[2], blank, ids[3], blank, ids[4]]):
            outputs[0, step, symbol] = 1.0
        outputs[0, 8, blank] = blank_share
        outputs[0, 9:, blank] = 1.0
        return (outputs / outputs.sum(-1, keepdims=True)).astype(np.float32)  # as onnxruntime returns them

    outputs = five_digits(0.8)  # the fifth digit only just beats the blank
    assert predictor.mode.decode(outputs)[0].text == "12345"  # five digits: no training label is so long
    answer = predictor.decode(outputs)[0]
    assert answer.text == "1234" and 0 < answer.confidence < 0.5, answer
    assert json.loads(json.dumps(answer.to_dict()))["result"] == "1234"  # as the API sends it
    # A sharp calibration (temperature 0.1, as fitted on clean sets) would shrink the blank's
    # 0.2 / 1.2 at the fifth digit's step to about 1e-7: the re-read searches the model's own outputs.
    predictor.temperature = 0.1
    sharp = predictor.decode(five_digits(0.2))[0]
    assert sharp.text == "1234" and sharp.confidence == pytest.approx(0.2 / 1.2, rel=0.05), sharp
    # The blank best at every step, though "11" is likely too: nothing read is not re-read.
    nothing = np.zeros((1, steps, size), np.float32)
    nothing[..., blank] = 1.0
    nothing[0, [2, 6], blank], nothing[0, [2, 6], ids[0]] = 0.55, 0.45
    unread = predictor.decode(nothing)[0]
    assert (unread.text, unread.confidence) == ("", 0.0)


def test_feedback_is_off_by_default_then_kept_in_the_inbox_labelled(own_works: Path) -> None:
    works = own_works
    image = b64(sample(works))
    off = client(works).post("/api/v1/feedback", json={"image": image, "label": "1234"})
    assert off.status_code == 403 and off.json()["error"]["code"] == "feedback_disabled"
    api = client(works, "FEEDBACK=True")
    stored = api.post("/api/v1/feedback", json={"image": image, "label": "1234"})
    assert stored.status_code == 200
    path = works / "digits" / stored.json()["stored"]
    assert path.parent.name == "inbox" and path.read_bytes() == base64.b64decode(image)
    assert json.loads(path.with_suffix(".json").read_text())["label"] == "1234"
    again = api.post("/api/v1/feedback", json={"image": image, "label": "1234"})  # one copy per image
    assert again.json()["stored"] == stored.json()["stored"] and len(list(path.parent.glob("*.png"))) == 1
    for label in ("../../evil", "12a4", ""):  # CHARSET is digits
        bad = api.post("/api/v1/feedback", json={"image": image, "label": label})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_label", label
    assert "'0123456789'" in api.post("/api/v1/feedback", json={"image": image, "label": "12a4"}).text
    full = client(works, "FEEDBACK=True", "INBOX_MAX_FILES=1").post(
        "/api/v1/feedback", json={"image": b64(png(Image.new("L", (40, 20)))), "label": "9"})
    assert full.status_code == 409 and full.json()["error"]["code"] == "inbox_full"


def test_api_key_and_body_limit(works: Path) -> None:
    api = client(works, api_keys="s3cret", max_body_bytes=10_000)
    assert api.get("/healthz").status_code == 200
    assert api.post("/api/v1/recognize", json={"image": "aGk="}).json()["error"]["code"] == "unauthorized"
    ok = api.post("/api/v1/recognize", json={"image": b64(sample(works))}, headers={"X-API-Key": "s3cret"})
    assert ok.status_code == 200
    huge = api.post("/api/v1/recognize", content=b"x" * 20_000,
                    headers={"X-API-Key": "s3cret", "content-type": "application/json"})
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "body_too_large"


def test_named_keys_for_crawlers_bearcat_clients_and_people(works: Path) -> None:
    api = client(works, api_keys="spider:k-spider-1,mobile:k-mobile-2", rate_limit=2.0)
    image = b64(sample(works))
    for headers in ({"X-API-Key": "k-spider-1"}, {"Authorization": "Bearer k-mobile-2"}):
        assert api.post("/api/v1/recognize", json={"image": image}, headers=headers).status_code == 200
    for wrong in ({"X-API-Key": "k-spider-"}, {"X-API-Key": "k-spider-1 "}, {"X-API-Key": ""}, {}):
        answer = api.post("/api/v1/recognize", json={"image": image}, headers=wrong)
        assert answer.status_code == 401 and "X-API-Key" in answer.json()["error"]["message"]
    # Bearcat clients post a form to / and send no headers: the key goes in the URL
    assert api.post("/", data={"img": image}).status_code == 401
    assert api.post("/?key=k-mobile-2", data={"img": image}).json()["return_code"] == "200"
    assert api.get("/api/v1/models?key=k-mobile-2").status_code == 401  # only the Bearcat route reads ?key=
    # people: the page and /docs send a browser to /login, which sets a session cookie
    html = {"accept": "text/html"}
    for path in ("/ui/", "/docs", "/"):
        away = api.get(path, headers=html, follow_redirects=False)
        assert away.status_code == 303 and away.headers["location"].startswith("/login?next="), path
    assert "API key" in api.get("/login").text
    refused = api.post("/login", data={"key": "guess", "next": "/docs"}, follow_redirects=False)
    assert refused.status_code == 401 and "not one of this server" in refused.text
    assert "capforge_session" not in refused.headers.get("set-cookie", "")
    outside = api.post("/login", data={"key": "k-spider-1", "next": "//evil.example/"}, follow_redirects=False)
    assert outside.status_code == 303 and outside.headers["location"] == "/ui/"  # never to another site
    person = client(works, api_keys="spider:k-spider-1,mobile:k-mobile-2")
    entered = person.post("/login", data={"key": "k-mobile-2", "next": "/docs"}, follow_redirects=False)
    assert entered.status_code == 303 and entered.headers["location"] == "/docs"
    assert person.get("/docs", headers=html).status_code == 200 and person.get("/openapi.json").status_code == 200
    assert person.post("/api/v1/recognize", json={"image": image}).status_code == 200  # the page's own calls
    forged = person.cookies["capforge_session"].replace("mobile.", "spider.")
    stranger = client(works, api_keys="spider:k-spider-1,mobile:k-mobile-2")
    stranger.cookies.set("capforge_session", forged)
    assert stranger.get("/api/v1/models").status_code == 401
    person.get("/logout")
    assert person.get("/api/v1/models").status_code == 401
    # each key its own rate (2 a second here): the third call at once is refused, the other key is not
    api = client(works, api_keys="spider:k-spider-1,mobile:k-mobile-2", rate_limit=2.0)
    calls = [api.get("/api/v1/models", headers={"X-API-Key": "k-spider-1"}) for _ in range(3)]
    assert [c.status_code for c in calls] == [200, 200, 429]
    assert calls[2].json()["error"]["code"] == "rate_limited" and int(calls[2].headers["Retry-After"]) >= 1
    assert api.get("/api/v1/models", headers={"X-API-Key": "k-mobile-2"}).status_code == 200
    assert api.get("/healthz").status_code == 200  # never limited, never locked
    metrics = api.get("/metrics", headers={"X-API-Key": "k-mobile-2"}).text
    assert 'capforge_key_requests_total{key="spider"} 3.0' in metrics
    assert 'capforge_errors_total{code="rate_limited"} 1.0' in metrics


def test_wrong_logins_from_one_address_are_slowed_down(works: Path) -> None:
    api = client(works, api_keys="k-spider-1")
    answers = [api.post("/login", data={"key": f"guess{i}"}) for i in range(6)]
    assert [a.status_code for a in answers] == [401] * 5 + [429]
    assert int(answers[-1].headers["Retry-After"]) >= 1
    late = api.post("/login", data={"key": "k-spider-1"}, follow_redirects=False)
    assert late.status_code == 429  # even the right key waits: guessing gains nothing


@pytest.mark.parametrize(("keys", "message"), [
    ("spider:a,spider:b", "given twice"), ("bad name:x", "names are"), ("spider:", "is empty"),
    ("a:same,b:same", "share one key"),
])
def test_a_malformed_key_list_is_a_clear_error(keys: str, message: str) -> None:
    from capforge.errors import SettingsError
    from capforge.serve.access import ApiKeys

    with pytest.raises(SettingsError, match=message):
        ApiKeys.parse(keys)


def test_a_broken_re_export_keeps_the_previous_model_serving(works: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "works"
    shutil.copytree(works / "digits", copy / "digits")
    monkeypatch.setattr(registry_module, "RELOAD_CHECK_SECONDS", 0.0)
    api = client(copy)
    image = b64(sample(works))
    before = api.post("/api/v1/recognize", json={"image": image}).json()["result"]
    (copy / "digits" / "exports" / "current" / "manifest.json").write_text("{ half written")
    after = api.post("/api/v1/recognize", json={"image": image})
    assert after.status_code == 200 and after.json()["result"] == before


def test_default_body_limit_follows_max_image_bytes(works: Path) -> None:
    small = client(works, "MAX_IMAGE_BYTES=1000")
    large = client(works, "MAX_IMAGE_BYTES=20000000")
    body = b"x" * 200_000
    headers = {"content-type": "application/json"}
    assert small.post("/api/v1/recognize", content=body, headers=headers).json()["error"]["code"] == "body_too_large"
    assert large.post("/api/v1/recognize", content=body, headers=headers).json()["error"]["code"] == "invalid_json"


def test_inference_threads_setting_reaches_onnxruntime(works: Path) -> None:
    for setting, expected in (("INFERENCE_THREADS=1", 1), ("INFERENCE_THREADS=2", 2)):
        model = ModelRegistry(works, None, [setting]).resolve(None)
        options = model.predictor.session.get_session_options()
        assert options.intra_op_num_threads == expected
        assert client(works, setting).post("/api/v1/recognize", json={"image": b64(sample(works))}).status_code == 200


def test_unknown_routes_and_wrong_methods_answer_in_the_error_format(works: Path) -> None:
    api = client(works)
    missing = api.get("/api/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert "/api/v1/nothing-here" in missing.json()["error"]["message"]
    wrong = api.get("/api/v1/recognize")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    assert "POST" in wrong.headers["allow"]


def test_docs_describe_every_route_with_its_request_answer_and_error_codes(works: Path) -> None:
    from capforge.serve.schemas import ERROR_CODES

    spec = client(works, demo_captcha=True).get("/openapi.json").json()
    recognise = spec["paths"]["/api/v1/recognize"]["post"]
    body = recognise["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["image"] and "prompt" in body["properties"]
    assert recognise["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("RecognizeAnswer")
    assert "invalid_base64" in recognise["responses"]["400"]["description"]
    documented = " ".join(op["responses"][s].get("description", "") for ops in spec["paths"].values()
                          for op in ops.values() for s in op["responses"])
    assert all(code in documented for code, (status, _) in ERROR_CODES.items() if status != 405), \
        [code for code in ERROR_CODES if code not in documented]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert "200" in op["responses"], (method, path)
