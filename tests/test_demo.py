import subprocess
import sys
from pathlib import Path


def demo(works: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "capforge", "demo", "--works", str(works), "--count", "300",
                           "--minutes", "0.2", "--no-serve"], capture_output=True, text=True, timeout=900)


def test_demo_runs_every_built_step_and_reuses_its_work(tmp_path: Path) -> None:
    result = demo(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    root = tmp_path / "demo"
    counts = {s: len(list((root / "data" / s).iterdir())) for s in ("train", "validation", "test")}
    assert counts == {"train": 240, "validation": 30, "test": 30}
    for step in ("== split", "== pack", "== train", "== export", "== test"):
        assert step in result.stdout
    assert (root / "exports" / "current" / "model.onnx").is_file()
    assert (root / "reports" / "test_report.json").is_file()
    again = demo(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reusing" in again.stdout and "already trained" in again.stdout
    assert "== export" not in again.stdout and "nothing new to split" in again.stdout
