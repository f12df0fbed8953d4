"""Serving speed and robustness over loopback HTTP, with raw onnxruntime figures from the same run.

1. Latency and throughput at concurrency 1, 8 and 32 for the default CTC model, beside raw
   onnxruntime single-image time and batched throughput. Targets: median HTTP latency at
   concurrency 1 at most twice the raw single-image time; throughput at concurrency 32 at least
   80 % of raw batched throughput.
2. N requests mixing good and bad inputs: counts of 5xx, wrong answers, and the server's resident
   memory at start and end.
Every request loop is bounded in count; only 127.0.0.1 is contacted.

``--workers N`` runs the server with N processes (default: the server's own);
``--wrk`` also measures each concurrency level with wrk (Debian package ``wrk``), a C load
generator that leaves more of the two cores to the server than Python's requests threads do;
``--floor`` (with ``--wrk``) also measures bare ASGI apps on the same uvicorn and worker count
(``bench/http_floor.py``): HTTP alone, then with decoding and preprocessing, then with the model
call, so the targets can be read against what serving costs before capforge's own code;
``--peers`` also starts ddddocr's own HTTP server (``ddddocr[api]``, its bundled model) with the
same worker count and loads it the same way (capforge's server idles meanwhile).
"""

from __future__ import annotations

import argparse
import base64
import importlib.metadata
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe  # noqa: E402

from capforge.cli import invoke  # noqa: E402
from capforge.data.generate import CaptchaSpec, generate  # noqa: E402
from capforge.serve.server import default_workers  # noqa: E402
from capforge.workspace import create_workspace  # noqa: E402


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and every process under it (uvicorn's workers)."""
    total = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1]) / 1024
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += rss_mib(int(child))
    return total


def exported_workspace(root: Path) -> Path:
    ws = create_workspace(root, "benchserve", "CTC", force=True)
    generate(CaptchaSpec("0123456789abcdefghijklmnopqrstuvwxyz", 4, 4), ws.pool, 600, seed=5, progress=False)
    for step, argv in (("split", []), ("pack", []), ("train", ["--minutes", "0.5"]), ("export", [])):
        assert invoke(step, ws.root, argv) == 0, step
    return ws.root


def raw_figures(export: Path, images: list[bytes], threads: int | None) -> tuple[float, float]:
    """Median ms for one image, and images/s at batch 32 (preprocessed inputs, model call only),
    with ``threads`` onnxruntime threads (None: one per core)."""
    from capforge.serve.predictor import Predictor

    predictor = Predictor(export, threads)
    inputs = predictor.inputs(images[:64])
    single = []
    for i in range(200):
        started = time.perf_counter()
        predictor.probabilities(inputs[i % 64:i % 64 + 1])
        single.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    for _ in range(20):
        predictor.probabilities(inputs[:32])
    return statistics.median(single), 640 / (time.perf_counter() - started)


RECOGNIZE = "/api/v1/recognize"


def load(url: str, payloads: list[dict], concurrency: int,
         route: str = RECOGNIZE) -> tuple[list[float], float, list[requests.Response | None]]:
    """Post every payload with ``concurrency`` threads: latencies (ms), requests/s, and the
    responses (None where the server dropped the connection)."""
    sessions = [requests.Session() for _ in range(concurrency)]

    def one(i: int) -> tuple[float, requests.Response | None]:
        started = time.perf_counter()
        try:
            response = sessions[i % concurrency].post(url + route, json=payloads[i], timeout=30)
        except requests.ConnectionError:
            response = None
        return (time.perf_counter() - started) * 1000, response

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(len(payloads))))
    elapsed = time.perf_counter() - started
    return [r[0] for r in results], len(payloads) / elapsed, [r[1] for r in results]


def wrk_figures(url: str, payload: dict, concurrency: int, seconds: int = 15,
                route: str = RECOGNIZE) -> tuple[str, float, int]:
    """Median latency text, requests/s and failed requests (error answers, socket errors) from
    wrk posting ``payload`` for ``seconds``."""
    body = json.dumps(payload).replace("\\", "\\\\").replace("'", "\\'")
    with tempfile.TemporaryDirectory() as folder:  # the floor calls this six times more: leave nothing behind
        script = Path(folder) / "post.lua"
        script.write_text(f"wrk.method = 'POST'\nwrk.headers['Content-Type'] = 'application/json'\n"
                          f"wrk.body = '{body}'\n")
        result = subprocess.run(["wrk", f"-t{min(2, concurrency)}", f"-c{concurrency}", f"-d{seconds}s", "--latency",
                                 "-s", str(script), url + route],
                                capture_output=True, text=True, check=True).stdout
    median = re.search(r"50%\s+(\S+)", result).group(1)
    errors = sum(int(n) for n in re.findall(r"(?:Non-2xx or 3xx responses|connect|read|write|timeout):? (\d+)", result))
    return median, float(re.search(r"Requests/sec:\s+([\d.]+)", result).group(1)), errors


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, health: str = "/healthz") -> None:
    for _ in range(120):
        try:
            requests.get(url + health, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.5)
    raise RuntimeError(f"nothing answered at {url}{health} within a minute")


def measure_levels(name: str, url: str, payloads: list[dict], wrk: bool, route: str = RECOGNIZE) -> None:
    """Print latency and throughput at concurrency 1, 8 and 32 (and wrk's figures, if asked)."""
    load(url, payloads[:50], 4, route)  # warm up
    for concurrency in (1, 8, 32):
        latencies, rate, responses = load(url, payloads, concurrency, route)
        failed = sum(r is None or not r.ok for r in responses)
        print(f"{name} concurrency {concurrency:>2}: median {statistics.median(latencies):6.2f} ms, "
              f"p95 {np.percentile(latencies, 95):6.2f} ms, {rate:7.1f} requests/s"
              + (f" ({failed} error answers)" if failed else ""), flush=True)
        if wrk:
            median, wrk_rate, errors = wrk_figures(url, payloads[0], concurrency, route=route)
            print(f"  with wrk:     median {median}, {wrk_rate:7.1f} requests/s"
                  + (f" ({errors} failed)" if errors else ""), flush=True)


# ddddocr's servers: its documented one (``python -m ddddocr api``), and the second one its
# package holds (ddddocr.api.server), one process, which needs POST /initialize first.
PEERS = {
    "documented": ["-m", "ddddocr", "api", "--host", "127.0.0.1", "--port", "{port}", "--workers", "{workers}"],
    "api.server": ["-c", "import sys; from ddddocr.api.server import run_server; "
                   "run_server('127.0.0.1', int(sys.argv[1]), log_level='warning')", "{port}"],
}


def peer_figures(payloads: list[dict], workers: int, wrk: bool) -> None:
    """The same load on ddddocr's own HTTP servers (``ddddocr[api]``, its bundled model, POST /ocr),
    each checked with one request first: one that answers errors is reported, not measured."""
    try:
        version = importlib.metadata.version("ddddocr")
    except importlib.metadata.PackageNotFoundError:
        print("peer ddddocr: not installed (pip install -r bench/requirements.txt); skipped")
        return
    for name, argv in PEERS.items():
        port = free_port()
        peer = subprocess.Popen([sys.executable, *(a.format(port=port, workers=workers) for a in argv)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tempfile.gettempdir())
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(url, "/docs")
            if name == "api.server":
                requests.post(f"{url}/initialize", json={"ocr": True, "det": False}, timeout=60).raise_for_status()
            first = requests.post(f"{url}/ocr", json=payloads[0], timeout=60)
            processes = workers if name == "documented" else 1
            label = f"peer ddddocr {version}, {name} server ({processes} process(es), its bundled model)"
            if not first.ok:
                print(f"{label}: answers {first.status_code} {first.text[:160]}; not measured", flush=True)
                continue
            print(f"{label}: answered {first.json()}", flush=True)
            measure_levels(f"ddddocr {name}", url, payloads, wrk, "/ocr")
        finally:
            peer.terminate()
            peer.wait(timeout=10)


def floor_figures(export: Path, payload: dict, workers: int) -> None:
    """wrk figures at concurrency 1 and 32 for each level of bench/http_floor.py's bare app."""
    for work in ("http", "preprocess", "model"):
        port = free_port()
        env = {**os.environ, "CAPFORGE_FLOOR_WORK": work, "CAPFORGE_FLOOR_EXPORT": str(export),
               "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                              os.environ.get("PYTHONPATH", "")])}
        app = subprocess.Popen([sys.executable, "-m", "uvicorn", "http_floor:app", "--app-dir",
                                str(Path(__file__).resolve().parent), "--port", str(port), "--workers", str(workers),
                                "--log-level", "warning", "--no-access-log"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(f"http://127.0.0.1:{port}")
            figures = [wrk_figures(f"http://127.0.0.1:{port}", payload, c) for c in (1, 32)]
        finally:
            app.terminate()
            app.wait(timeout=10)
        print(f"floor, bare app doing {work:>10}: concurrency 1 median {figures[0][0]}; "
              f"concurrency 32 {figures[1][1]:7.1f} requests/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600, help="requests per concurrency level")
    parser.add_argument("--mixed", type=int, default=20000, help="requests in the robustness run")
    parser.add_argument("--workers", type=int, help="server processes (default: the server's own)")
    parser.add_argument("--wrk", action="store_true", help="also load the server with wrk")
    parser.add_argument("--floor", action="store_true", help="also measure bare apps on the same uvicorn (needs --wrk)")
    parser.add_argument("--peers", action="store_true",
                        help="also load ddddocr's own HTTP server the same way (bench/requirements.txt)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="a serving setting for the server, e.g. INFERENCE_THREADS=0")
    args = parser.parse_args()
    if args.wrk and not shutil.which("wrk"):
        parser.error("--wrk needs the wrk program: apt-get install wrk")
    if args.floor and not args.wrk:
        parser.error("--floor measures with wrk: add --wrk")
    print(f"machine: {describe()}")
    root = exported_workspace(Path(tempfile.mkdtemp(prefix="capforge-serve-")))
    images = [p.read_bytes() for p in sorted((root / "data").rglob("*.png"))]
    raw = {threads: raw_figures(root / "exports" / "current", images, threads) for threads in (1, None)}
    for threads, (single, rate) in raw.items():
        print(f"raw onnxruntime, {threads or 'one per core'} thread(s): {single:.2f} ms per single image; "
              f"{rate:.0f} images/s at batch 32")
    # the anchors are the best raw figures, whichever thread count gives them
    single_ms, batched_rate = min(r[0] for r in raw.values()), max(r[1] for r in raw.values())
    port = free_port()
    overrides = ["CACHE_SIZE=0", *args.overrides]
    workers = default_workers() if args.workers is None else args.workers
    print(f"server: {workers} worker process(es), settings {' '.join(overrides)}")
    server = subprocess.Popen([sys.executable, str(root / "app.py"), "--port", str(port), "--workers", str(workers),
                               *(a for o in overrides for a in ("--set", o))],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    payloads = [{"image": base64.b64encode(images[i % len(images)]).decode()} for i in range(args.requests)]
    try:
        wait_for(url)
        measure_levels("capforge", url, payloads, args.wrk)
        print(f"targets: median at concurrency 1 <= {2 * single_ms:.2f} ms (2 x raw); "
              f"throughput at 32 >= {0.8 * batched_rate:.0f} requests/s (80 % of raw batched)")
        if args.floor:
            floor_figures(root / "exports" / "current", payloads[0], workers)
        if args.peers:
            peer_figures(payloads, workers, args.wrk)

        good = {i: base64.b64encode(images[i]).decode() for i in range(min(200, len(images)))}
        expected = {i: requests.post(f"{url}/api/v1/recognize", json={"image": b}, timeout=30).json()["result"]
                    for i, b in good.items()}
        bad = [{"image": "@@@"}, {"image": base64.b64encode(images[0][:100]).decode()},
               {"image": base64.b64encode(b"just text").decode()}, {"image": ""}, {},
               {"image": "aGk=", "model": "missing"}, {"image": "data:text/plain;base64,aGk="}]
        mixed, kinds = [], []
        for i in range(args.mixed):
            if i % 2:
                mixed.append(bad[i % len(bad)])
                kinds.append(None)
            else:
                key = i % len(good)
                mixed.append({"image": good[key]})
                kinds.append(key)
        start_rss = rss_mib(server.pid)
        _, rate, responses = load(url, mixed, 8)
        end_rss = rss_mib(server.pid)
        five = sum(r is None or r.status_code >= 500 for r in responses)  # a dropped connection counts too
        wrong = sum(1 for r, k in zip(responses, kinds)
                    if k is not None and (r is None or r.status_code != 200 or r.json()["result"] != expected[k]))
        bad_ok = sum(1 for r, k in zip(responses, kinds) if k is None and (r is None or not 400 <= r.status_code < 500))
        print(f"mixed run: {len(mixed)} requests ({len(mixed) // 2} good) at {rate:.0f} requests/s: "
              f"{five} answers 5xx, {wrong} good requests answered wrongly, {bad_ok} bad requests not 4xx; "
              f"server memory (all its processes) {start_rss:.0f} MiB at start, {end_rss:.0f} MiB at end")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
