"""The review-and-retrain loop: capture doubtful answers, outcome reports, review (HTTP API and
terminal), pre-labelling, and retraining behind a promotion gate."""

from __future__ import annotations

import base64
import json
import re
import shutil
import time
from pathlib import Path
from typing import Callable

import pytest
import requests
from fastapi.testclient import TestClient
from PIL import Image

from capforge.retrain import decide
from capforge.serve.api import create_app
from capforge.serve.registry import ModelRegistry

from conftest import answers_on_the_page, run_script, running_app
from test_serve_live import CHROMIUM, loaded, page_tab


def client(works: Path, *overrides: str) -> TestClient:
    return TestClient(create_app(ModelRegistry(works, None, list(overrides))))


def recognize(api: TestClient, path: Path) -> dict:
    answer = api.post("/api/v1/recognize", json={"image": base64.b64encode(path.read_bytes()).decode()})
    assert answer.status_code == 200, answer.text
    return answer.json()


def eventually(check: Callable[[], bool], seconds: float = 15.0) -> bool:
    """Whether ``check`` comes true within ``seconds`` (the page answers asynchronously)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def truth(path: Path) -> str:
    return path.name.split("_")[0]


def test_capture_reports_and_review_over_http(own_works: Path) -> None:
    ws = own_works / "digits"
    inbox, pool = ws / "data" / "inbox", ws / "data" / "pool"
    images = sorted((ws / "data" / "test").glob("*.png"))[:8]
    off = client(own_works)
    assert recognize(off, images[0])["request_id"]
    assert not inbox.exists() or not list(inbox.iterdir())  # capture is off by default
    refused = off.post("/api/v1/report", json={"request_id": "x", "outcome": "right"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "reports_disabled"

    api = client(own_works, "CAPTURE=doubtful", "CAPTURE_BELOW=1.0")  # every answer below 1.0 is doubtful
    answers = {path: recognize(api, path) for path in images}
    kept = sorted(inbox.glob("*.png"))
    assert len(kept) == len(images)
    record = json.loads(kept[0].with_suffix(".json").read_text())
    assert {"answer", "confidence", "model_version", "time"} <= set(record) and record["source"] == "capture"
    right = [p for p, a in answers.items() if a["result"] == truth(p)][:2]
    wrong = next(p for p in images if p not in right)
    for path in right:
        report = api.post("/api/v1/report", json={"request_id": answers[path]["request_id"], "outcome": "right"})
        assert report.status_code == 200, report.text
        labelled = ws / report.json()["stored"]
        assert labelled.parent == pool and labelled.name.startswith(f"{truth(path)}_")
        assert labelled.read_bytes() == path.read_bytes()
    report = api.post("/api/v1/report", json={"request_id": answers[wrong]["request_id"], "outcome": "wrong"})
    assert report.status_code == 200 and report.json()["stored"].startswith("data/inbox/")
    provenance = [json.loads(line) for line in (ws / "data" / "provenance.jsonl").read_text().splitlines()]
    assert [p["labelled_by"] for p in provenance] == ["site", "site"]
    again = api.post("/api/v1/report", json={"request_id": answers[right[0]]["request_id"], "outcome": "right"})
    assert again.status_code == 404 and again.json()["error"]["code"] == "unknown_request"
    bad = api.post("/api/v1/report", json={"request_id": answers[wrong]["request_id"], "outcome": "maybe"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_outcome"
    assert api.post("/api/v1/report", json={"outcome": "right"}).json()["error"]["code"] == "missing_field"
    metrics = api.get("/metrics").text
    assert re.search(r'capforge_outcomes_total\{model="digits",outcome="right"\} 2\.0', metrics)
    assert re.search(r'capforge_answers_total\{model="digits"\} 8\.0', metrics)

    first = api.get("/api/v1/review").json()  # the answer the site called wrong comes first
    assert first["left"] == len(images) - 2 and first["wrong"] is True
    assert first["key"] == answers[wrong]["request_id"] and base64.b64decode(first["image"]) == wrong.read_bytes()
    bad_label = api.post("/api/v1/review", json={"key": first["key"], "action": "label", "label": "12a4"})
    assert bad_label.status_code == 400 and bad_label.json()["error"]["code"] == "invalid_label"
    assert "CHARSET '0123456789'" in bad_label.json()["error"]["message"]
    done = api.post("/api/v1/review", json={"key": first["key"], "action": "label", "label": truth(wrong)})
    assert done.status_code == 200 and (ws / done.json()["stored"]).read_bytes() == wrong.read_bytes()
    nxt = api.get("/api/v1/review").json()
    confidences = [json.loads(p.read_text())["confidence"] for p in inbox.glob("*.json")]
    assert nxt["confidence"] == min(confidences)  # then the least confident
    skipped = api.post("/api/v1/review", json={"key": nxt["key"], "action": "skip"})
    assert skipped.status_code == 200 and api.get("/api/v1/review").json()["key"] != nxt["key"]
    gone = api.post("/api/v1/review", json={"key": nxt["key"], "action": "unreadable", "reason": "smudged"})
    assert gone.json()["stored"].startswith("data/quarantine/")
    assert "smudged" in (ws / "data" / "quarantine" / "REASONS.tsv").read_text()
    assert api.post("/api/v1/review", json={"key": nxt["key"], "action": "skip"}).status_code == 404
    assert api.post("/api/v1/review", json={"key": "k", "action": "x"}).json()["error"]["code"] == "invalid_action"

    window = client(own_works, "OUTCOME_WINDOW=3")  # only kept for a report: not in the review queue
    for extra in sorted((ws / "data" / "validation").glob("*.png"))[:6]:
        answer = recognize(window, extra)
    assert (inbox / "awaiting" / f"{answer['request_id']}.png").is_file()
    assert len(list((inbox / "awaiting").glob("*.png"))) == 3  # the newest OUTCOME_WINDOW answers
    assert window.get("/api/v1/review").json()["left"] == len(images) - 4
    outcome = window.post("/api/v1/report", json={"request_id": answer["request_id"], "outcome": "wrong"})
    assert outcome.status_code == 200 and window.get("/api/v1/review").json()["key"] == answer["request_id"]


def test_prelabel_then_review_in_the_terminal(own_works: Path, tmp_path: Path) -> None:
    ws = own_works / "digits"
    scraped = tmp_path / "scraped"
    scraped.mkdir()
    originals = sorted((ws / "data" / "test").glob("*.png"))[:5]
    for i, path in enumerate(originals):
        shutil.copy(path, scraped / f"img{i}.png")
    (scraped / "broken.png").write_bytes(b"not an image")
    result = run_script(ws, "prelabel.py", str(scraped))
    assert result.returncode == 0, result.stderr
    assert "5 added to data/inbox for review" in result.stdout and "1 unreadable" in result.stdout
    rows = (scraped / "prelabels.csv").read_text().splitlines()
    confidences = [float(r.split(",")[2]) for r in rows[1:6]]
    assert rows[0] == "file,answer,confidence,problem" and confidences == sorted(confidences)
    assert rows[-1].startswith("broken.png,")
    # a person at the terminal: accept, skip, mark unreadable, correct, then a bad label, then stop
    items = sorted(((json.loads(p.read_text()), p) for p in (ws / "data" / "inbox").glob("*.json")),
                   key=lambda r: (r[0]["confidence"], r[0]["time"], r[0]["key"]))
    keys = [record["key"] for record, _ in items]
    script = "\n/s\n/u too dark\n9876\n12345\n/q\n"
    review = run_script(ws, "review.py", stdin=script)
    assert review.returncode == 0, review.stderr
    pool = ws / "data" / "pool"
    assert (pool / f"{items[0][0]['answer']}_{keys[0]}.png").is_file()  # Enter accepted the answer shown
    assert (pool / f"9876_{keys[3]}.png").is_file()  # typed: corrected
    assert "too dark" in (ws / "data" / "quarantine" / "REASONS.tsv").read_text()
    assert "not written" in review.stdout and "at most CAPTCHA_LENGTH=4" in review.stdout  # 12345
    assert "1 label" not in review.stdout and "2 label" in review.stdout and "1 skip" in review.stdout
    left = {p.stem for p in (ws / "data" / "inbox").glob("*.png")}
    assert left == {keys[1], keys[4]}  # the skipped one and the one the bad label left waiting


@pytest.mark.parametrize(("lost", "won", "recent", "promote"), [
    (0, 0, (5, 6), False),  # a gain of one image on recent is no evidence
    (0, 0, (4, 9), False),  # nor of five with none lost (p = 1/32 > 0.025)
    (0, 0, (2, 9), True),   # seven with none lost is (p = 1/128)
    (3, 0, (2, 9), True),   # losing 3 test images, none won, is within noise (p = 1/8)
    (6, 0, (2, 9), False),  # losing 6 is not (p = 1/64)
    (6, 1, (2, 9), True),   # nor is 6 lost against 1 won (p = 8/128)
    (0, 2, (6, 6), False),  # better on test, but not on recent
])
def test_the_gate_follows_the_figures(lost: int, won: int, recent: tuple[int, int], promote: bool) -> None:
    test_current = [True] * lost + [False] * won + [True] * 20
    test_candidate = [False] * lost + [True] * won + [True] * 20
    recent_current = [True] * recent[0] + [False] * (10 - recent[0])
    recent_candidate = [True] * recent[1] + [False] * (10 - recent[1])
    verdict = decide(test_current, test_candidate, recent_current, recent_candidate)
    assert verdict.promote is promote, verdict.reasons


def drifted(pool: Path, count: int, seed: int) -> None:
    """New captchas in a style the served model never saw (light digits on dark): the drift a
    site's captchas go through."""
    import random

    from PIL import ImageOps

    from clean_data import render

    rng = random.Random(seed)
    pool.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        label = "".join(rng.choice("0123456789") for _ in range(rng.randint(2, 4)))
        ImageOps.invert(render(label, 96, 32, rng)).save(pool / f"{label}_drift{seed}-{i}.png")


def test_retrain_promotes_a_better_model_and_refuses_a_worse_one(own_works: Path) -> None:
    ws = own_works / "digits"
    api = client(own_works)
    served = api.get("/api/v1/models").json()[0]["exported_at"]
    test_split = sorted(p.name for p in (ws / "data" / "test").iterdir())
    drifted(ws / "data" / "pool", 200, seed=1)
    result = run_script(ws, "retrain.py", "--minutes", "0.5")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((ws / re.search(r"report: (\S+)", result.stdout).group(1)).read_text())
    figures = report["figures"]
    assert sorted(p.name for p in (ws / "data" / "test").iterdir()) == test_split  # the test split never changes
    assert figures["recent"]["current"]["images"] == report["new_images"]["recent"] == 40
    assert figures["recent"]["candidate"]["right"] - figures["recent"]["current"]["right"] >= 6, figures
    assert report["promoted"], report  # the drifted style is learned: the candidate reads what the old one cannot
    assert "promoted" in result.stdout and list((ws / "exports").glob("previous-*"))
    time.sleep(1.1)  # the server looks for a new export at most once a second
    assert api.get("/api/v1/models").json()[0]["exported_at"] != served  # the running server serves it

    served = (ws / "exports" / "current" / "manifest.json").read_bytes()
    best = (ws / "checkpoints" / "best.keras").read_bytes()
    drifted(ws / "data" / "pool", 100, seed=2)
    worse = run_script(ws, "retrain.py", "--minutes", "0.2", "--set", "LR=1.0")  # ruined on purpose
    assert worse.returncode == 0, worse.stderr[-3000:]
    assert "refused" in worse.stdout and "worse beyond sampling noise" in worse.stdout
    assert (ws / "exports" / "current" / "manifest.json").read_bytes() == served
    assert (ws / "checkpoints" / "best.keras").read_bytes() == best  # the served model's checkpoint again
    assert (ws / "exports" / "candidate" / "model.onnx").is_file()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (./run test installs it)")
def test_the_loop_over_a_live_server_the_crawler_and_the_review_tab(own_works: Path) -> None:
    ws = own_works / "digits"
    pool = ws / "data" / "pool"
    settings = ["--set", "CAPTURE=doubtful", "--set", "CAPTURE_BELOW=0.5", "--set", "OUTCOME_WINDOW=50"]
    with running_app(ws, "--demo-captcha", "--workers", "1", *settings) as url:
        images = sorted((ws / "data" / "test").glob("*.png"))
        answers = [(p, requests.post(f"{url}/api/v1/recognize", timeout=10,
                                     json={"image": base64.b64encode(p.read_bytes()).decode()}).json()) for p in images]
        right = [(p, a) for p, a in answers if a["result"] == truth(p) and a["confidence"] >= 0.5][:2]
        for path, answer in right:  # confident answers wait for a report, outside the review queue
            assert (ws / "data" / "inbox" / "awaiting" / f"{answer['request_id']}.png").is_file()
            reply = requests.post(f"{url}/api/v1/report", json={"request_id": answer["request_id"], "outcome": "right"},
                                  timeout=10)
            assert reply.status_code == 200 and (ws / reply.json()["stored"]).parent == pool
        crawler = run_script(ws, "spider_example.py", "--url", url, "--count", "1", "--attempts", "3")
        # the demo route's captchas are a style this model never learned: read wrong, and reported
        wrong = crawler.stdout.count("reported wrong: kept as data/inbox/")
        assert wrong >= 1 and wrong == crawler.stdout.count("  wrong (was "), crawler.stdout
        metrics = requests.get(f"{url}/metrics", timeout=10).text
        assert f'capforge_outcomes_total{{model="digits",outcome="wrong"}} {wrong}.0' in metrics
        assert 'capforge_outcomes_total{model="digits",outcome="right"} 2.0' in metrics
        first = requests.get(f"{url}/api/v1/review", timeout=10).json()
        assert first["wrong"] is True
        with page_tab(url, "review: digits") as tab:
            box = tab.locator("#review-label-digits textarea")
            tab.wait_for_function("a => document.querySelector('#review-label-digits textarea')?.value === a",
                                  arg=first["answer"], timeout=15000)  # the model's answer, pre-filled
            assert eventually(lambda: loaded(tab, "#review-image-digits"))  # the captcha itself is shown
            box.fill("4321")
            box.press("Enter")
            assert eventually(lambda: (pool / f"4321_{first['key']}.png").is_file())
            second = requests.get(f"{url}/api/v1/review", timeout=10).json()
            tab.wait_for_function("a => document.querySelector('#review-label-digits textarea')?.value === a",
                                  arg=second["answer"], timeout=15000)
            tab.locator("body").press("Escape")  # Esc skips
            record = ws / "data" / "inbox" / f"{second['key']}.json"
            assert eventually(lambda: json.loads(record.read_text()).get("skipped") == 1)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (./run test installs it)")
def test_behind_keys_a_person_logs_in_recognises_and_reviews(own_works: Path) -> None:
    """A server with named keys, as the compose file runs it: crawlers send their header; a
    person in headless Chromium is sent to the login page, logs in once, recognises a captcha
    on the page and labels a captured one in the review tab."""
    ws = own_works / "digits"
    pool, picture = ws / "data" / "pool", sorted((ws / "data" / "test").glob("*.png"))[0]
    keys = "spider:k-spider-1,people:k-people-2"
    with running_app(ws, "--workers", "1", "--api-key", keys, "--set", "CAPTURE=all") as url:
        body = {"image": base64.b64encode(picture.read_bytes()).decode()}
        assert requests.post(f"{url}/api/v1/recognize", json=body, timeout=10).status_code == 401
        answer = requests.post(f"{url}/api/v1/recognize", json=body, headers={"X-API-Key": "k-spider-1"},
                               timeout=10).json()
        shown, _ = answers_on_the_page(url, [picture], [answer["result"]], key="k-people-2")
        assert shown == [answer["result"]]
        with page_tab(url, "review: digits", key="k-people-2") as tab:
            box = tab.locator("#review-label-digits textarea")
            tab.wait_for_function("a => document.querySelector('#review-label-digits textarea')?.value === a",
                                  arg=answer["result"], timeout=15000)  # the captured answer, pre-filled
            box.fill("4321")
            box.press("Enter")
            assert eventually(lambda: any(pool.glob("4321_*.png")))
        metrics = requests.get(f"{url}/metrics", headers={"X-API-Key": "k-spider-1"}, timeout=10).text
        assert re.search(r'capforge_key_requests_total\{key="people"\} [1-9]', metrics)
        assert re.search(r'capforge_key_requests_total\{key="spider"\} [1-9]', metrics)


def test_a_class_label_is_a_folder_and_never_a_path(tmp_path: Path) -> None:
    from capforge.inbox import Inbox
    from capforge.settings import load_settings
    from capforge.workspace import create_workspace

    ws = create_workspace(tmp_path / "works", "tiles", "NUM_CLASSES")
    inbox = Inbox(ws, load_settings(ws.root))
    image = tmp_path / "tile.png"
    Image.new("RGB", (20, 20), "red").save(image)
    item = inbox.add(image.read_bytes(), ".png", {"source": "test", "answer": "cat", "confidence": 0.3})
    for bad in ("../evil", "a/b", ".hidden"):
        assert "would be a folder name" in inbox.label_problem(bad)
    stored = inbox.label(item, "cat", "person")
    assert stored == ws.pool / "cat" / f"{item.key}.png" and stored.read_bytes() == image.read_bytes()
    assert not list(ws.inbox.glob("*.png")) and not list(ws.inbox.glob("*.json"))


def test_a_capture_that_cannot_be_written_costs_the_capture_not_the_answer(own_works: Path) -> None:
    inbox = own_works / "digits" / "data" / "inbox"
    shutil.rmtree(inbox, ignore_errors=True)
    inbox.write_text("a file where the inbox folder should be")
    api = client(own_works, "CAPTURE=all")
    answer = recognize(api, sorted((own_works / "digits" / "data" / "test").glob("*.png"))[0])
    assert answer["result"] and answer["request_id"]
    assert re.search(r'capforge_kept_images_total\{model="digits",why="failed"\} 1\.0', api.get("/metrics").text)
