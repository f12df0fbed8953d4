from pathlib import Path

from conftest import run_script


def test_reset_asks_then_clears_only_checkpoints_and_logs(workspace: Path) -> None:
    (workspace / "checkpoints" / "best.keras").write_text("weights")
    (workspace / "logs" / "run1").mkdir()
    (workspace / "logs" / "run1" / "events").write_text("log")
    (workspace / "data" / "train" / "1234_a.png").write_text("data")
    (workspace / "exports" / "model.onnx").write_text("model")

    refused = run_script(workspace, "init_working_space.py", "--reset")
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert (workspace / "checkpoints" / "best.keras").exists()

    done = run_script(workspace, "init_working_space.py", "--reset", "--yes")
    assert done.returncode == 0, done.stderr
    assert not any((workspace / "checkpoints").iterdir()) and not any((workspace / "logs").iterdir())
    assert (workspace / "data" / "train" / "1234_a.png").read_text() == "data"
    assert (workspace / "exports" / "model.onnx").read_text() == "model"


def test_init_recreates_missing_folders(workspace: Path) -> None:
    (workspace / "packed").rmdir()
    result = run_script(workspace, "init_working_space.py")
    assert result.returncode == 0 and "created packed" in result.stdout
    assert (workspace / "packed").is_dir()
