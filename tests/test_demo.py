import subprocess
import sys
from pathlib import Path


def test_demo_runs_as_far_as_capforge_goes(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "capforge", "demo", "--works", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    root = tmp_path / "demo"
    counts = {s: len(list((root / "data" / s).iterdir())) for s in ("train", "validation", "test")}
    assert counts == {"train": 1600, "validation": 200, "test": 200}
    assert "== split" in result.stdout
    again = subprocess.run([sys.executable, "-m", "capforge", "demo", "--works", str(tmp_path)],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "reusing" in again.stdout and "nothing new to split" in again.stdout
