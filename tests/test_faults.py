"""Faults a user's machine meets: a server worker killed under load, and a disk that fills up
during pack or export (a small tmpfs mounted for the test, where the machine allows mounting)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

from capforge.cli import invoke
from capforge.workspace import create_workspace

from clean_data import fill_pool
from conftest import run_script, running_server


def worker_pids(pid: int) -> set[int]:
    """uvicorn's worker processes under ``pid`` (spawned by multiprocessing)."""
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(OSError):
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.add(int(child))
    return found


def test_a_worker_killed_under_load_is_replaced_while_the_other_answers(served_works: Path) -> None:
    workspace = served_works / "digits"
    image = base64.b64encode(next((workspace / "data" / "test").glob("*.png")).read_bytes()).decode()
    with running_server(workspace, "--workers", "2") as (url, server):
        before = worker_pids(server.pid)
        assert len(before) == 2
        stop = threading.Event()
        answers: list[tuple[float, int]] = []  # (time, status); status 0: the connection broke

        def crawler() -> None:
            while not stop.is_set():
                try:  # a new connection each time, so both workers keep taking them
                    status = requests.post(f"{url}/api/v1/recognize", json={"image": image}, timeout=10).status_code
                except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
                    status = 0  # refused, or cut off mid-answer by the kill
                answers.append((time.monotonic(), status))

        crawlers = [threading.Thread(target=crawler) for _ in range(4)]
        for thread in crawlers:
            thread.start()
        try:
            time.sleep(2)
            victim = min(before)
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            time.sleep(5)
            # The replacement starts and loads its models meanwhile: on two busy cores (the
            # suite runs two tests at once) that has taken longer than 5 s, so wait for it.
            deadline = killed + 120
            while (len(after := worker_pids(server.pid)) < 2 or victim in after) and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            stop.set()
            for thread in crawlers:
                thread.join()
    assert len(after) == 2 and victim not in after and after - before, (before, after)
    later = [status for at, status in answers if at > killed + 0.5]
    assert len(later) >= 20 and set(later) == {200}  # the other worker kept answering throughout
    assert sum(status != 200 for _, status in answers) <= 4  # at most the killed worker's requests in flight


@contextlib.contextmanager
def small_disk(folder: Path, megabytes: int) -> Iterator[Path]:
    """A tmpfs of ``megabytes`` mounted at ``folder`` (skips where mounting is not allowed)."""
    folder.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()}); needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def fill_up(disk: Path) -> Path:
    """Write a ballast file until the disk is full, then free a few kilobytes (room for small
    files, none for a pack or an export)."""
    ballast = disk / "ballast"
    with ballast.open("wb") as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
    with ballast.open("r+b") as f:
        f.truncate(max(0, ballast.stat().st_size - 16384))
    return ballast


def tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_full_disk_during_pack_or_export_keeps_the_previous_one_in_use(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", 24) as disk:
        ws = create_workspace(disk / "works", "w", "CTC_TINY")
        with (ws.root / "settings.py").open("a") as f:
            f.write("CHARSET = '0123456789'\nIMAGE_HEIGHT = 32\nIMAGE_WIDTH = 96\nEPOCHS = 1\nBATCH_SIZE = 16\n")
        fill_pool(ws.pool, 120, lengths=(4, 4))
        for step in ("split", "pack", "train", "export"):
            assert invoke(step, ws.root, []) == 0, step
        packed, exported = tree(ws.packed), json.loads((ws.exports / "current" / "manifest.json").read_text())
        ballast = fill_up(disk)

        pack = run_script(ws.root, "pack_dataset.py")
        assert pack.returncode != 0 and "Traceback" not in pack.stderr
        assert "disk is full" in pack.stderr and "packed/ is still the one in use" in pack.stderr, pack.stderr
        assert tree(ws.packed) == packed and not (ws.root / "packed.tmp").exists()

        export = run_script(ws.root, "save_model.py")
        assert export.returncode != 0 and "Traceback" not in export.stderr
        assert "disk is full" in export.stderr and "exports/current is still the one in use" in export.stderr
        assert json.loads((ws.exports / "current" / "manifest.json").read_text()) == exported
        assert not (ws.exports / ".staging").exists()

        ballast.unlink()  # with room again, both work
        assert run_script(ws.root, "pack_dataset.py").returncode == 0
        assert run_script(ws.root, "save_model.py").returncode == 0
