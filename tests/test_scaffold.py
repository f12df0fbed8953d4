import json
from pathlib import Path

from capforge import __version__
from capforge.step_table import SCRIPTS as STEP_SCRIPTS

from conftest import new_work, run_script

EXPECTED = ["settings.py", "models.py", "utils.py", "spider_example.py", *STEP_SCRIPTS]


def test_new_work_from_any_directory_creates_every_file(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = new_work(tmp_path / "works", "site1", "--mode", "ctc", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    root = tmp_path / "works" / "site1"
    for name in EXPECTED:
        assert (root / name).is_file(), name
    for folder in ("data/pool", "data/train", "data/validation", "data/test", "checkpoints",
                   "logs", "exports", "packed"):
        assert (root / folder).is_dir(), folder
    record = json.loads((root / "capforge.json").read_text())
    assert record["capforge_version"] == __version__
    assert record["mode"] == "CTC" and record["site"] == "site1"
    assert "MODE = 'CTC'" in (root / "settings.py").read_text()


def test_existing_workspace_is_refused_in_one_line(tmp_path: Path) -> None:
    assert new_work(tmp_path / "works", "site1").returncode == 0
    again = new_work(tmp_path / "works", "site1")
    assert again.returncode == 2
    assert "already exists" in again.stderr and "--force" in again.stderr
    assert "Traceback" not in again.stderr and len(again.stderr.strip().splitlines()) == 1


def test_force_keeps_user_changes_as_backup_and_never_touches_data(tmp_path: Path) -> None:
    assert new_work(tmp_path / "works", "site1").returncode == 0
    root = tmp_path / "works" / "site1"
    (root / "settings.py").write_text("MODE = 'ORDINARY'\nEPOCHS = 7\n")
    (root / "data" / "pool" / "abcd_1.png").write_bytes(b"not really")
    result = new_work(tmp_path / "works", "site1", "--force", "--mode", "ORDINARY")
    assert result.returncode == 0, result.stderr
    backups = list(root.glob("settings.py.bak-*"))
    assert len(backups) == 1 and "EPOCHS = 7" in backups[0].read_text()
    assert (root / "data" / "pool" / "abcd_1.png").read_bytes() == b"not really"
    assert json.loads((root / "capforge.json").read_text())["force"] is True


def test_invalid_site_name_writes_nothing(tmp_path: Path) -> None:
    for bad in ("../evil", "a b", "_x", ".x", "x" * 65):
        result = new_work(tmp_path / "works", bad)
        assert result.returncode == 2, bad
        assert "invalid site name" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "works").exists() or not any((tmp_path / "works").iterdir())
    assert not (tmp_path / "evil").exists()


def test_unknown_mode_is_refused(tmp_path: Path) -> None:
    result = new_work(tmp_path / "works", "site1", "--mode", "YOLO")
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_scripts_run_from_repo_root_and_from_inside(workspace: Path, tmp_path: Path) -> None:
    inside = run_script(workspace, "init_working_space.py")
    outside = run_script(workspace, "init_working_space.py", cwd=tmp_path)
    assert inside.returncode == 0 and outside.returncode == 0, inside.stderr + outside.stderr
    assert "all folders present" in outside.stdout


def test_every_script_has_help(workspace: Path) -> None:
    for script in STEP_SCRIPTS:
        result = run_script(workspace, script, "--help")
        assert result.returncode == 0, script
        assert "--set KEY=VALUE" in result.stdout, script


def test_training_before_packing_says_what_to_run(tmp_path: Path) -> None:
    assert new_work(tmp_path / "works", "clicks", "--mode", "EFFICIENTDET").returncode == 0
    result = run_script(tmp_path / "works" / "clicks", "train.py")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "no packed data in packed; run pack_dataset.py first" in result.stderr
