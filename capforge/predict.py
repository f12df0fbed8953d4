"""The predict step: answer every image of a folder with a workspace's model, into a CSV.

Unlabelled images a crawler saved, read the way the server reads them (the export through
onnxruntime, its calibrated confidences and MIN_CONFIDENCE gate). An image that cannot be read
keeps its row, with the reason, so nothing is silently dropped; the CSV appears only complete.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Mapping

from tqdm import tqdm

from capforge.data.images import IMAGE_SUFFIXES, open_image
from capforge.errors import DataError, ImageError
from capforge.evaluate import load_predictor
from capforge.modes import accepted
from capforge.workspace import Workspace

BATCH = 64
COLUMNS = ("file", "answer", "confidence", "accepted", "problem")


def image_files(folder: Path) -> list[Path]:
    """The image files in ``folder`` and its sub-folders, in name order."""
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder; give the folder that holds the images to read")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def predict_folder(workspace: Workspace, settings: Mapping[str, Any], folder: Path, out: Path,
                   progress: bool = True) -> dict[str, Any]:
    """Write one CSV row per image of ``folder`` to ``out``; return the counts and the model used."""
    files = image_files(folder)
    if not files:
        raise DataError(f"{folder} holds no images (allowed: {', '.join(sorted(IMAGE_SUFFIXES))})")
    predictor, source = load_predictor(workspace)
    rows: list[dict[str, Any]] = []
    for start in tqdm(range(0, len(files), BATCH), desc="predicting", unit="batch", disable=not progress):
        readable = []
        for path in files[start:start + BATCH]:
            name = path.relative_to(folder).as_posix()
            try:
                readable.append((name, open_image(path)))
            except ImageError as exc:
                problem = str(exc).split(": ", 1)[-1]  # the row names the file already
                rows.append({"file": name, "answer": "", "confidence": 0.0, "accepted": False, "problem": problem})
        answers = predictor.predict([image for _, image in readable]) if readable else []
        for (name, _), answer in zip(readable, answers):
            rows.append({"file": name, "answer": answer.text, "confidence": round(answer.confidence, 6),
                         "accepted": accepted(answer.confidence, settings["MIN_CONFIDENCE"]), "problem": ""})
    rows.sort(key=lambda row: row["file"])
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".part")
    with partial.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(partial, out)
    return {"images": len(rows), "accepted": sum(r["accepted"] for r in rows),
            "unreadable": sum(bool(r["problem"]) for r in rows), "model": source}
