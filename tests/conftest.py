"""Shared fixtures: scaffold real workspaces and run their scripts as a user would."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_script(workspace: Path, script: str, *args: str, cwd: Path | None = None,
               stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a workspace script with this Python, from ``cwd`` (default: inside the workspace),
    with ``env`` added to the environment."""
    return subprocess.run([sys.executable, str(workspace / script), *args], cwd=cwd or workspace,
                          capture_output=True, text=True, input=stdin, timeout=600, env={**os.environ, **(env or {})})


def new_work(works: Path, site: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "New_work.py"), str(works), site, *args],
                          cwd=cwd or works.parent, capture_output=True, text=True, timeout=120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_answering(process: subprocess.Popen, url: str, what: str) -> None:
    """Wait up to a minute for ``url`` to answer 200; fail at once if ``process`` exits first."""
    import requests

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            if process.poll() is not None:
                pytest.fail(f"{what} exited: {process.stdout.read() if process.stdout else ''}")
            time.sleep(0.3)
    pytest.fail(f"{what} did not answer {url} within a minute")


@contextlib.contextmanager
def running_server(workspace: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """The workspace's app.py under uvicorn on a free loopback port; yields its URL and process."""
    port = free_port()
    process = subprocess.Popen([sys.executable, str(workspace / "app.py"), "--port", str(port), *args],
                               cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(process, f"{url}/healthz", "app.py")
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def running_app(workspace: Path, *args: str) -> Iterator[str]:
    """The workspace's app.py under uvicorn on a free loopback port; yields its URL."""
    with running_server(workspace, *args) as (url, _):
        yield url


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A fresh CTC workspace with CHARSET digits and CAPTCHA_LENGTH 4."""
    result = new_work(tmp_path / "works", "site1", "--mode", "CTC")
    assert result.returncode == 0, result.stderr
    root = tmp_path / "works" / "site1"
    with (root / "settings.py").open("a") as f:
        f.write("CHARSET = '0123456789'\nCAPTCHA_LENGTH = 4\n")
    return root


@pytest.fixture(scope="session")
def served_works(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """works/digits: a CTC_TINY model trained on clean digits (it reads them), exported and tested."""
    from capforge.cli import invoke
    from capforge.workspace import create_workspace

    from clean_data import fill_pool

    works = tmp_path_factory.mktemp("serve") / "works"
    ws = create_workspace(works, "digits", "CTC_TINY")
    with (ws.root / "settings.py").open("a") as f:
        # No augmentation: 12 epochs on 400 clean images learn faster without it (this fixture
        # is about serving a model that reads its digits, not about training defaults).
        f.write("IMAGE_HEIGHT = 32\nIMAGE_WIDTH = 96\nCHARSET = '0123456789'\nEPOCHS = 12\n"
                "BATCH_SIZE = 16\nLR = 0.003\nDATA_ENHANCEMENT = False\n")
    fill_pool(ws.pool, 400, lengths=(2, 4))
    for step in ("split", "pack", "train", "export", "test"):
        assert invoke(step, ws.root, []) == 0, step
    return works


@pytest.fixture
def own_works(served_works: Path, tmp_path: Path) -> Path:
    """A copy of ``served_works`` that a test may change (inbox, pool, exports)."""
    import shutil

    works = tmp_path / "works"
    shutil.copytree(served_works, works, symlinks=True)
    return works


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                "--disable-component-update", "--disable-sync"]


def log_in(tab: Any, key: str) -> None:
    """On the server's login page (where a page behind keys sends a browser), enter ``key``
    and wait for the page it was sent from."""
    assert "/login" in tab.url, tab.url
    tab.locator("input[name=key]").fill(key)
    tab.get_by_role("button", name="Log in").click()
    tab.wait_for_url("**/ui/**")
    tab.wait_for_load_state("networkidle")


def answers_on_the_page(url: str, pictures: list[Path], expected: list[str], pages: int = 1,
                        screenshot: Path | None = None, key: str | None = None) -> tuple[list[str | None], str]:
    """In headless Chromium, open ``pages`` pages of the Gradio UI (logging in with ``key``
    first, when given) and, taking them in turn, upload each picture and press Recognize; wait up
    to 15 s for the page to show its expected text. Returns what each page showed (None when the
    answer never came) and the last info line."""
    from playwright.sync_api import TimeoutError as NoAnswer
    from playwright.sync_api import sync_playwright

    shown: list[str | None] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        tabs = [browser.new_context().new_page() for _ in range(pages)]
        for tab in tabs:
            tab.goto(url + "/", wait_until="networkidle")
            if key is not None:
                log_in(tab, key)
        for i, (picture, text) in enumerate(zip(pictures, expected)):
            tab = tabs[i % pages]
            tab.locator("input[type=file]").first.set_input_files(str(picture))
            tab.get_by_role("button", name="Recognize").click()
            try:
                tab.wait_for_function("text => document.querySelector('#result textarea')?.value === text && "
                                      "document.querySelector('#info textarea')?.value.includes('ms')",
                                      arg=text, timeout=15000)
                shown.append(text)
            except NoAnswer:
                shown.append(None)
        info = tabs[-1].locator("#info textarea").input_value()
        if screenshot:
            tabs[-1].screenshot(path=str(screenshot))
        browser.close()
    return shown, info
