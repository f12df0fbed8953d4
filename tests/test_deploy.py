"""The container's install and start steps (deploy/serve.sh, which the Dockerfile runs), proven in
a fresh virtual environment with only the serve extra: no TensorFlow, and the server answers."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import venv
from pathlib import Path

import requests

from conftest import REPO, free_port, wait_until_answering


def test_the_serve_extra_alone_serves_an_export(served_works: Path, tmp_path: Path) -> None:
    venv.create(tmp_path / "venv", with_pip=True)
    python = tmp_path / "venv" / "bin" / "python"
    env = {**os.environ, "PYTHON": str(python), "CAPFORGE_WORKS": str(served_works),
           "CAPFORGE_HOST": "127.0.0.1", "CAPFORGE_PORT": str(free_port()), "CAPFORGE_WORKERS": "1"}
    env.pop("PYTHONPATH", None)
    install = subprocess.run(["sh", str(REPO / "deploy" / "serve.sh"), "install"], env=env, capture_output=True,
                             text=True, timeout=900)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    found = subprocess.run([str(python), "-c", "import importlib.util as u; print(u.find_spec('tensorflow'), "
                            "u.find_spec('capforge').origin)"], capture_output=True, text=True, env=env,
                           cwd=tmp_path)
    assert found.stdout.startswith("None ") and str(tmp_path / "venv") in found.stdout, found.stdout
    server = subprocess.Popen(["sh", str(REPO / "deploy" / "serve.sh"), "start"], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{env['CAPFORGE_PORT']}"
    try:
        wait_until_answering(server, f"{url}/healthz", "deploy/serve.sh start")
        image = next((served_works / "digits" / "data" / "test").glob("*.png")).read_bytes()
        answer = requests.post(f"{url}/api/v1/recognize", json={"image": base64.b64encode(image).decode()},
                               timeout=30)
        assert answer.status_code == 200 and answer.json()["model"] == "digits", answer.text
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_the_start_step_refuses_a_public_address_without_a_key(served_works: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "CAPFORGE_WORKS": str(served_works),
           "CAPFORGE_HOST": "0.0.0.0", "CAPFORGE_PORT": str(free_port())}
    env.pop("CAPFORGE_API_KEY", None)
    result = subprocess.run(["sh", str(REPO / "deploy" / "serve.sh"), "start"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0 and "CAPFORGE_API_KEY" in result.stderr and "Traceback" not in result.stderr
