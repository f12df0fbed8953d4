"""The acceptance check of the modes issue, as a user runs it: every step is a script."""

import json
from pathlib import Path

import onnxruntime
import pytest

from capforge.modes import MODE_CLASSES
from conftest import new_work, run_script

STEPS = [("gen_sample_by_captcha.py", "--count", "400"), ("split_dataset.py",), ("pack_dataset.py",),
         ("train.py",), ("save_model.py",), ("test.py",)]


# Every registered mode that reads text or classes; click captchas (tests/modes/efficientdet/) and
# measured answers (angles, positions: tests/modes/test_measured.py) have their own end-to-end tests.
TEXT_MODES = [name for name, cls in MODE_CLASSES.items() if not cls.labels_from_boxes and not cls.measure]


@pytest.mark.parametrize("mode", TEXT_MODES)
def test_scaffold_to_report(tmp_path: Path, mode: str) -> None:
    assert new_work(tmp_path / "works", "site", "--mode", mode).returncode == 0
    root = tmp_path / "works" / "site"
    whole_label_is_a_class = MODE_CLASSES[mode].tokens("12") == ["12"]
    length = 1 if whole_label_is_a_class else 4
    with (root / "settings.py").open("a") as f:
        f.write(f"CHARSET = '0123456789'\nCAPTCHA_LENGTH = {length}\nIMAGE_HEIGHT = 32\n"
                "IMAGE_WIDTH = 96\nEPOCHS = 2\n")
    for script, *args in STEPS:
        result = run_script(root, script, *args)
        assert result.returncode == 0, f"{script}: {result.stderr[-2000:]}"
        # quiet, honest output: no TensorFlow start-up notices, no per-step progress bars in a file
        for notice in ("cuInit", "oneDNN", "cudart_stub", "absl::InitializeLog", "shuffle=True"):
            assert notice not in result.stderr, f"{script}: {result.stderr[-2000:]}"
        if script == "train.py":
            assert "━" not in result.stdout and "epoch 2: " in result.stdout, result.stdout[-2000:]
            assert len(result.stdout.splitlines()) < 20  # one line per epoch, not per step
    export = root / "exports" / "current"
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["mode"] == mode and manifest["preprocessing"]["width"] == 96
    assert manifest["charset"]["blank"] == (0 if MODE_CLASSES[mode].uses_blank else None)
    # the CTC head's bidirectional GRUs are native ONNX GRU nodes, not per-step Loops
    assert manifest["onnx_export"] == ("native recurrent" if mode == "CTC" else "keras")
    session = onnxruntime.InferenceSession(str(export / "model.onnx"))
    assert session.get_inputs()[0].shape[1:] == [32, 96, 1]
    report = json.loads((root / "reports" / "test_report.json").read_text())
    assert report["model"].startswith("exported ONNX model")
    assert report["images"] == 40
    for key in ("sequence_accuracy", "character_accuracy", "cer", "accuracy_by_length", "confusions",
                "calibration"):
        assert key in report
    assert (root / "logs" / "training.csv").is_file() and (root / "logs" / "training_curves.png").is_file()
    assert (root / "reports" / "test_worst.png").is_file() or report["sequence_accuracy"] == 1.0
    for picture in ("test_confusions.png", "test_reliability.png", "../logs/training_curves.png"):
        assert (root / "reports" / picture).read_bytes()[:4] == b"\x89PNG", picture
    # the page builds for this mode, and its review tab pre-fills an image dropped into the inbox
    import shutil

    from capforge.serve.registry import ModelRegistry
    from capforge.serve.ui import build_ui, review_view

    registry = ModelRegistry(tmp_path / "works")
    assert build_ui(registry) is not None
    dropped = next((root / "data" / "test").rglob("*.png"))
    (root / "data" / "inbox").mkdir(exist_ok=True)
    shutil.copy(dropped, root / "data" / "inbox" / "dropped.png")
    status, image, answer, key = review_view(registry.resolve("site"))
    assert key == "dropped" and image.endswith("dropped.png") and "1 left" in status
    assert answer == registry.resolve("site").answers([dropped])[0][0]
