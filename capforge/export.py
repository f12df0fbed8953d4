"""save_model.py: the best checkpoint as .keras + ONNX + manifest, checked for parity.

The export is built in ``exports/.staging`` and becomes ``exports/current`` only after the
ONNX model, run through the serving predictor, gives the same decoded strings as Keras on
every validation image and outputs within PARITY_TOLERANCE; otherwise export fails loudly
and ``exports/current`` is left as it was. The manifest also gets the temperature that
calibrates the answers' confidences on the validation images (capforge.calibration).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from tqdm import tqdm

from capforge.version import __version__
from capforge.calibration import fit_temperature
from capforge.data.images import iter_images
from capforge.errors import CapforgeError, WorkspaceError, disk_space
from capforge.modes import label_reader, recorded_mode
from capforge.onnx_export import export_onnx
from capforge.serve.predictor import MANIFEST, Predictor
from capforge.train import BEST, TRAINING_FILE, load_checkpoint
from capforge.workspace import Workspace, hook


class ParityError(CapforgeError):
    """Raised when the ONNX model does not answer like the Keras model it came from."""


def parity_images(workspace: Workspace, limit: int = 512) -> tuple[str, list[Path]]:
    """The split and its images used for the parity check: validation if it has any."""
    for split in ("validation", "test", "train"):
        images = list(iter_images(workspace.split_dir(split)))[:limit]
        if images:
            return split, images
    return "validation", []


def calibrate(workspace: Workspace, settings: Mapping[str, Any], predictor: Predictor, split: str,
              images: list[Path]) -> dict[str, Any]:
    """The answer temperature fitted on the validation images (never on test or train images,
    whose reports it would flatter); T = 1 without them."""
    if split != "validation" or not predictor.mode.calibrated:
        return {"temperature": 1.0, "images": 0}
    reader = label_reader(settings, hook(workspace, "utils", "label_from_path"))
    folder = workspace.split_dir(split)
    labelled = [(path, label) for path in images
                if (label := reader.label(path, folder)) is not None and predictor.mode.accepts(label)]
    outputs = [predictor.probabilities(predictor.inputs([path for path, _ in labelled[start:start + 64]]))
               for start in tqdm(range(0, len(labelled), 64), desc="calibrating", unit="batch")]
    if not outputs:
        return {"temperature": 1.0, "images": 0}
    return fit_temperature(predictor.mode, np.concatenate(outputs), [label for _, label in labelled])


def check_parity(keras_model: Any, predictor: Predictor, images: list[Path], tolerance: float) -> dict[str, Any]:
    """Compare Keras and ONNX on the same preprocessed inputs; raise ParityError on mismatch."""
    worst, mismatches = 0.0, []
    for start in tqdm(range(0, len(images), 64), desc="checking parity", unit="batch"):
        chunk = images[start:start + 64]
        batch = predictor.inputs(chunk)
        expected = np.asarray(keras_model.predict_on_batch(batch))
        got = predictor.probabilities(batch)
        worst = max(worst, float(np.abs(expected - got).max()))
        for path, a, b in zip(chunk, predictor.mode.decode(expected), predictor.mode.decode(got)):
            if a.text != b.text:
                mismatches.append(f"{path.name}: keras {a.text!r}, onnx {b.text!r}")
    if mismatches or worst > tolerance:
        raise ParityError(f"ONNX export disagrees with Keras on {len(mismatches)} of {len(images)} images "
                          f"(largest output difference {worst:.2e}, tolerance {tolerance:g})"
                          + (f": {mismatches[0]}" if mismatches else "") + "; the export was not installed")
    return {"images": len(images), "max_abs_diff": worst}


def export(workspace: Workspace, settings: Mapping[str, Any], name: str = "current") -> dict[str, Any]:
    """Export the best checkpoint to ``exports/<name>`` (``current``: the served one, whose
    predecessor is kept as ``previous-<time>``); return the manifest."""
    best = workspace.checkpoints / BEST
    record_path = workspace.checkpoints / TRAINING_FILE
    if not best.is_file() or not record_path.is_file():
        raise WorkspaceError(f"no trained model in {workspace.relative(workspace.checkpoints)}; run train.py first")
    record = json.loads(record_path.read_text(encoding="utf-8"))
    model = recorded_mode(record).served(load_checkpoint(best))
    staging = workspace.exports / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    current = workspace.exports / name
    kept = f"{workspace.relative(current)} is still the one in use" if current.exists() else "nothing was exported"
    with disk_space(f"writing {workspace.relative(staging)}", kept, staging):
        staging.mkdir(parents=True)
        model.save(staging / "model.keras")  # the model as served (a mode may add views: Mode.served)
        print("converting to ONNX...", flush=True)  # one call, tens of seconds for a recurrent model
        onnx_kind = export_onnx(model, staging / "model.onnx")
        utils = workspace.root / "utils.py"
        if utils.is_file():
            shutil.copy2(utils, staging / "utils.py")  # the preprocess_image hook serves too
        manifest = {
            "schema": "capforge.export/1", "name": workspace.name, "mode": record["mode"],
            "charset": record["charset"], "label_width": record["label_width"],
            "label_lengths": record.get("label_lengths"),
            "preprocessing": record["preprocessing"], "settings": record["settings"],
            "capforge_version": __version__, "exported_at": _dt.datetime.now().isoformat(timespec="seconds"),
            "onnx": "model.onnx", "onnx_export": onnx_kind, "keras": "model.keras",
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
        split, images = parity_images(workspace)
        predictor = Predictor(staging)
        manifest["parity"] = check_parity(model, predictor, images, settings["PARITY_TOLERANCE"])
        manifest["calibration"] = calibrate(workspace, settings, predictor, split, images)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    if current.exists():
        if name == "current":
            retire(workspace)
        else:
            shutil.rmtree(current)  # an earlier candidate, never served
    os.replace(staging, current)
    return manifest


def retire(workspace: Workspace) -> Path:
    """Move the served export aside to ``exports/previous-<time>`` (kept, never deleted)."""
    previous = workspace.exports / f"previous-{_dt.datetime.now():%Y%m%d-%H%M%S-%f}"
    os.replace(workspace.exports / "current", previous)
    return previous
