"""test.py: how good the model really is, on the whole test split, through the serving path.

The exported ONNX model is evaluated through the same Predictor that serves it. Before an
export exists the latest best checkpoint is used, and the report says so.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from rapidfuzz.distance import Levenshtein
from tqdm import tqdm

from capforge.data.images import iter_images
from capforge.errors import DataError, ImageError, WorkspaceError
from capforge.modes import Mode, label_reader
from capforge.reports import confusion_picture, reliability_picture, save_report, worst_grid
from capforge.serve.predictor import MANIFEST, Predictor, companion_of
from capforge.train import BEST, TRAINING_FILE, load_checkpoint
from capforge.workspace import Workspace, hook

BUCKETS = np.linspace(0.0, 1.0, 11)


class CheckpointPredictor(Predictor):
    """The best Keras checkpoint behind the Predictor interface (before an export exists)."""

    def __init__(self, workspace: Workspace) -> None:  # noqa: D107 - no onnxruntime session
        self.describe(json.loads((workspace.checkpoints / TRAINING_FILE).read_text(encoding="utf-8")))
        self.model = self.mode.served(load_checkpoint(workspace.checkpoints / BEST))
        self.extra = hook(workspace, "utils", "preprocess_image")

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(batch.astype(np.float32)))


def load_predictor(workspace: Workspace) -> tuple[Predictor, str]:
    """The exported model, or the best checkpoint (clearly labelled) when nothing is exported."""
    current = workspace.exports / "current"
    if (current / MANIFEST).is_file():
        return Predictor(current), f"exported ONNX model ({workspace.relative(current)})"
    if not (workspace.checkpoints / "best.keras").is_file():
        raise WorkspaceError("nothing to evaluate: no export and no checkpoint; run train.py first")
    return CheckpointPredictor(workspace), "checkpoint checkpoints/best.keras (NOT exported yet)"


def calibration(confidences: list[float], correct: list[bool]) -> list[dict[str, Any]]:
    """Per confidence bucket: how many answers, their mean confidence, and how many were right."""
    rows = []
    for low, high in zip(BUCKETS[:-1], BUCKETS[1:]):
        inside = [(c, ok) for c, ok in zip(confidences, correct) if low <= c < high or (high == 1.0 and c == 1.0)]
        rows.append({"from": round(float(low), 1), "to": round(float(high), 1), "count": len(inside),
                     "mean_confidence": float(np.mean([c for c, _ in inside])) if inside else None,
                     "accuracy": float(np.mean([ok for _, ok in inside])) if inside else None})
    return rows


def calibration_error(rows: list[dict[str, Any]]) -> float:
    """Expected calibration error: the answers' average gap between confidence and accuracy."""
    total = sum(row["count"] for row in rows)
    return sum(row["count"] * abs(row["accuracy"] - row["mean_confidence"]) for row in rows if row["count"]) / total


def answer_split(workspace: Workspace, settings: Mapping[str, Any], predictor: Predictor, split: str,
                 progress: bool = True) -> tuple[list[dict[str, Any]], list[str]]:
    """``predictor``'s answer to every labelled image of ``split``: rows of path, label,
    prediction, confidence and correct; and the images skipped (unlabelled or unreadable)."""
    folder = workspace.split_dir(split)
    reader = label_reader(settings, hook(workspace, "utils", "label_from_path"))
    items = [(p, reader.label(p, folder)) for p in iter_images(folder)]
    skipped = [workspace.relative(p) for p, label in items if label is None]
    items = [(p, label) for p, label in items if label is not None]
    if not items:
        raise DataError(f"no labelled images in {workspace.relative(folder)}; run split_dataset.py")
    rows: list[dict[str, Any]] = []
    mode = predictor.mode
    for start in tqdm(range(0, len(items), 64), desc=f"testing {split}", unit="batch", disable=not progress):
        chunk, images = [], []
        for path, label in items[start:start + 64]:
            try:
                images.append(predictor.placed(path))
                chunk.append((path, label))
            except ImageError:
                skipped.append(workspace.relative(path))
        if not chunk:
            continue
        outputs = predictor.probabilities(np.stack([array for array, _ in images]))
        for (path, label), output, (_, placed) in zip(chunk, outputs, images):
            answer = predictor.answer(output, placed)  # in the image's own pixels, where it has any
            row = {"path": str(path), "label": label, "prediction": answer.text,
                   "confidence": answer.confidence, "correct": answer.text == label}
            site = mode.rule.answer(answer).text  # what the site gets (ANSWER): an arithmetic result
            row |= {"answer": site, "answer_correct": bool(site) and site == mode.rule.answer_of(label)}
            error = mode.error(answer, label)
            if error is not None and mode.measure:  # measured answers: right when within the widest tolerance
                row |= {"error": round(error, 3), "correct": error <= mode.measure[1][-1]}
            rows.append(row)
    return rows, skipped


def measured_report(workspace: Workspace, mode: Mode, source: str, split: str, rows: list[dict[str, Any]],
                    skipped: list[str], seconds: float) -> dict[str, Any]:
    """The test report of a mode whose answers are measured (an angle, a position): mean,
    median and worst error, the share within each of the mode's tolerances, and a picture of
    the largest errors."""
    measured = [r for r in rows if "error" in r]
    if not measured:
        raise DataError(f"no image of {split} has a label {mode.name} can measure against")
    unit, tolerances = mode.measure  # type: ignore[misc]
    errors = np.array([r["error"] for r in measured])
    report = {
        "split": split, "mode": mode.name, "model": source, "images": len(measured),
        "skipped": skipped + [Path(r["path"]).name for r in rows if "error" not in r], "unit": unit,
        "mean_error": float(errors.mean()), "median_error": float(np.median(errors)), "max_error": float(errors.max()),
        "within": {f"{t:g}": float((errors <= t).mean()) for t in tolerances},
        "ms_per_image": 1000 * seconds / max(1, len(rows)),
        "worst": sorted(measured, key=lambda r: -r["error"])[:200],
    }
    target = save_report(workspace, split, report)
    worst_grid(measured, target.with_name(f"{split}_worst.png"), unit=unit)
    return report


def evaluate(workspace: Workspace, settings: Mapping[str, Any], split: str = "test",
             progress: bool = True) -> dict[str, Any]:
    """Evaluate every image of ``split``; write reports/<split>_report.json and a PNG grid."""
    predictor, source = load_predictor(workspace)
    mode = predictor.mode
    own = mode.evaluate(workspace, settings, predictor, source, split, progress)
    if own is not None:  # a mode with its own measures (detection: mAP)
        return own
    started = time.perf_counter()
    rows, skipped = answer_split(workspace, settings, predictor, split, progress)
    seconds = time.perf_counter() - started
    if mode.measure:
        return measured_report(workspace, mode, source, split, rows, skipped, seconds)
    edits = Counter()
    confusions: Counter = Counter()
    total_symbols = 0
    by_length: dict[int, list[bool]] = {}
    for row in rows:
        truth, guess = mode.tokens(row["label"]), mode.tokens(row["prediction"]) if row["prediction"] else []
        total_symbols += len(truth)
        by_length.setdefault(len(truth), []).append(row["correct"])
        for op in Levenshtein.editops(truth, guess):
            edits[op.tag] += 1
            if op.tag == "replace":
                confusions[(truth[op.src_pos], guess[op.dest_pos])] += 1
    n = len(rows)
    calibration_rows = calibration([r["confidence"] for r in rows], [r["correct"] for r in rows])
    report = {
        "split": split, "mode": mode.name, "model": source, "images": n, "skipped": skipped,
        "sequence_accuracy": sum(r["correct"] for r in rows) / n,
        "rule": mode.rule.name, "answer_accuracy": sum(r["answer_correct"] for r in rows) / n,
        "character_accuracy": 1 - (edits["replace"] + edits["delete"]) / max(1, total_symbols),
        "cer": sum(edits.values()) / max(1, total_symbols),
        "accuracy_by_length": {str(k): {"count": len(v), "accuracy": sum(v) / len(v)}
                               for k, v in sorted(by_length.items())},
        "confusions": [{"true": t, "predicted": p, "count": c} for (t, p), c in confusions.most_common(15)],
        "calibration": calibration_rows,
        "temperature": predictor.temperature,
        "calibration_error": calibration_error(calibration_rows),
        "ms_per_image": 1000 * seconds / max(1, n),
        "wrong": [r for r in rows if not r["correct"]][:200],
    }
    # whole captchas (a grid's tiles to click), read with the companion the server would load
    report |= mode.whole_report(workspace, settings, predictor, companion_of(mode, settings, workspace.root.parent)) or {}
    target = save_report(workspace, split, report)
    worst_grid(rows, target.with_name(f"{split}_worst.png"))
    confusion_picture(confusions, target.with_name(f"{split}_confusions.png"))
    reliability_picture(calibration_rows, target.with_name(f"{split}_reliability.png"))
    return report
