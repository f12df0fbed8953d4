"""The real server: uvicorn on a free loopback port, called with requests, the example
crawler, and the Gradio page in headless Chromium."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from conftest import (BROWSER_ARGS, CHROMIUM, answers_on_the_page, free_port, log_in, run_script, running_app,
                      wait_until_answering)

@pytest.fixture(scope="module")
def server(served_works: Path) -> Iterator[tuple[str, Path]]:
    workspace = served_works / "digits"
    with running_app(workspace, "--demo-captcha") as url:
        yield url, workspace


def test_acceptance_over_real_http(server: tuple[str, Path]) -> None:
    url, workspace = server
    image = base64.b64encode(next((workspace / "data" / "test").glob("*.png")).read_bytes()).decode()
    answer = requests.post(f"{url}/api/v1/recognize", json={"image": image}, timeout=10)
    assert answer.status_code == 200 and "result" in answer.json() and "confidence" in answer.json()
    compat = requests.post(url + "/", data={"img": image}, timeout=10).json()
    assert compat["return_code"] == "200" and compat["result"] == answer.json()["result"]
    assert requests.post(url + "/", data={"other": "x"}, timeout=10).json()["return_code"] == "5004"
    bad = requests.post(f"{url}/api/v1/recognize", json={"image": "@@@"}, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_base64"
    truncated = base64.b64encode(base64.b64decode(image)[:150]).decode()
    broken = requests.post(f"{url}/api/v1/recognize", json={"image": truncated}, timeout=10)
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_image"
    assert requests.post(f"{url}/api/v1/recognize", json={"image": image}, timeout=10).status_code == 200
    assert requests.get(f"{url}/metrics", timeout=10).status_code == 200
    home = requests.get(url + "/", timeout=10)
    assert home.status_code == 200 and "gradio" in home.text.lower()


def test_example_crawler_against_the_demo_captcha_route(server: tuple[str, Path]) -> None:
    url, workspace = server
    captcha = requests.get(f"{url}/demo/captcha", timeout=10)
    assert captcha.status_code == 200 and captcha.content.startswith(b"\x89PNG")
    assert re.fullmatch(r"[0-9]{4}", captcha.headers["X-Captcha-Label"])  # CAPTCHA_LENGTH digits
    assert not any(h.startswith("x-captcha-piece") for h in map(str.lower, captcha.headers))
    no_part = requests.get(f"{url}/demo/captcha/piece?seed=3", timeout=10)  # a text captcha has no piece
    assert no_part.status_code == 404 and no_part.json()["error"]["code"] == "unknown_part"
    assert "no other image; received 'piece'" in no_part.json()["error"]["message"]
    # The demo route draws captcha-package images, a style this fixture's model never learned, so
    # it answers them with texts of impossible lengths, which are never accepted. The crawler runs
    # against a "site" whose captchas the model reads: its test images, served from loopback.
    folder = workspace / "data" / "test"
    answers = {p.name: requests.post(f"{url}/api/v1/recognize", timeout=10,
                                     json={"image": base64.b64encode(p.read_bytes()).decode()}).json()
               for p in sorted(folder.glob("*.png"))[:10]}
    name, answer = next((n, a) for n, a in answers.items() if a["accepted"] and a["result"] == n.split("_")[0])
    port = free_port()
    site = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_answering(site, f"http://127.0.0.1:{port}/{name}", "the loopback site")
        result = run_script(workspace, "spider_example.py", "--url", url, "--count", "2",
                            "--captcha-url", f"http://127.0.0.1:{port}/{name}")
    finally:
        site.terminate()
        site.wait(timeout=10)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(f"solved: type {answer['result']!r}") == 2 and "attempt 1:" in result.stdout


def test_several_worker_processes_answer_alike(server: tuple[str, Path]) -> None:
    url, workspace = server
    images = [base64.b64encode(p.read_bytes()).decode() for p in sorted((workspace / "data" / "test").glob("*.png"))[:6]]
    expected = [requests.post(f"{url}/api/v1/recognize", json={"image": i}, timeout=10).json()["result"]
                for i in images]
    with running_app(workspace, "--workers", "2") as second:
        got = [requests.post(f"{second}/api/v1/recognize", json={"image": i}, timeout=10) for i in images]
        assert [r.status_code for r in got] == [200] * len(images)
        assert [r.json()["result"] for r in got] == expected
        assert requests.get(f"{second}/ui/", timeout=10).status_code == 200
        for _ in range(4):  # new connections, spread over both workers; /metrics adds them all up
            requests.post(f"{second}/api/v1/recognize", json={"image": images[0]}, timeout=10)
        counts = re.findall(r'^capforge_requests_total\{route="recognize"\} (\S+)$',
                            requests.get(f"{second}/metrics", timeout=10).text, re.MULTILINE)
        assert counts == ["10.0"]


def test_port_in_use_and_no_workers_are_clear_errors(server: tuple[str, Path]) -> None:
    url, workspace = server
    result = run_script(workspace, "app.py", "--port", url.rsplit(":", 1)[1])
    assert result.returncode == 2 and "pass another --port" in result.stderr
    result = run_script(workspace, "app.py", "--workers", "0")
    assert result.returncode == 2 and "--workers 0: the server needs at least 1 worker process" in result.stderr


def loaded(tab: Any, selector: str) -> bool:
    """Whether the first image under ``selector`` has loaded (a broken link has no width)."""
    return tab.evaluate(f"document.querySelector('{selector} img')?.naturalWidth > 0")


@contextlib.contextmanager
def page_tab(url: str, name: str, key: str | None = None) -> Iterator[Any]:
    """A headless Chromium page of the server's UI with the tab ``name`` open (logged in with
    ``key`` first, when given)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        try:
            tab = browser.new_page()
            tab.goto(url + "/ui/", wait_until="networkidle")
            if key is not None:
                log_in(tab, key)
            tab.get_by_role("tab", name=name).click()
            yield tab
        finally:
            browser.close()


def api_answer(url: str, picture: Path) -> str:
    return requests.post(f"{url}/api/v1/recognize", timeout=10,
                         json={"image": base64.b64encode(picture.read_bytes()).decode()}).json()["result"]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (./run test installs it)")
def test_gradio_page_in_headless_chromium(server: tuple[str, Path], tmp_path: Path) -> None:
    url, workspace = server
    picture = next((workspace / "data" / "test").glob("*.png"))
    label = picture.name.split("_")[0]
    assert api_answer(url, picture) == label
    shown, info = answers_on_the_page(url, [picture], [label], screenshot=tmp_path.parent / "gradio_page.png")
    assert shown == [label] and "confidence" in info


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (./run test installs it)")
def test_the_report_tab_shows_the_test_report_and_its_pictures(server: tuple[str, Path]) -> None:
    url, workspace = server
    report = json.loads((workspace / "reports" / "test_report.json").read_text())
    with page_tab(url, "report: digits") as tab:
        summary = tab.locator("#report-digits")
        summary.get_by_text("sequence accuracy").wait_for(timeout=15000)
        text = summary.inner_text()
        # The four pictures appear at once and then load: wait until each has finished (loaded or
        # broken), then say which drew nothing.
        tab.wait_for_function("() => { const pictures = [...document.querySelectorAll('#pictures-digits img')]; "
                              "return pictures.length === 4 && pictures.every(i => i.complete); }", timeout=15000)
        shown = tab.evaluate("[...document.querySelectorAll('#pictures-digits img')].map(i => i.naturalWidth)")
    assert f"sequence accuracy  {report['sequence_accuracy']:.4f}" in text and "calibration error" in text
    assert len(shown) == 4 and all(shown), shown  # curves, reliability, confusions, worst answers: all loaded


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (./run test installs it)")
def test_gradio_page_answers_while_crawlers_load_two_worker_processes(server: tuple[str, Path]) -> None:
    url, workspace = server
    by_answer = {api_answer(url, p): p for p in sorted((workspace / "data" / "test").glob("*.png"))[:12]}
    assert len(by_answer) >= 4  # distinct answers: a page still showing the last one is not a pass
    expected = list(by_answer)[:4] * 3
    pictures = [by_answer[text] for text in expected]
    image = base64.b64encode(pictures[0].read_bytes()).decode()
    with running_app(workspace, "--workers", "2") as second:
        stop = threading.Event()
        answered: list[int] = []  # crawler answers that came back 200 (list.append is thread-safe)

        def crawler() -> None:  # crawler traffic keeps both workers taking connections
            with requests.Session() as session:
                while not stop.is_set():
                    if session.post(f"{second}/api/v1/recognize", json={"image": image}, timeout=10).ok:
                        answered.append(1)

        crawlers = [threading.Thread(target=crawler) for _ in range(4)]
        for thread in crawlers:
            thread.start()
        try:
            shown, _ = answers_on_the_page(second, pictures, expected, pages=3)
        finally:
            stop.set()
            for thread in crawlers:
                thread.join()
    assert shown == expected
    assert len(answered) >= 100  # the page was used under real load, not beside crawlers that died


def test_the_server_does_not_load_tensorflow(served_works: Path) -> None:
    script = ("import sys\nfrom capforge.serve.server import build_app\n"
              f"build_app({{'works': {str(served_works)!r}}})\n"
              "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
