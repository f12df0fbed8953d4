"""The predict and prelabel steps: answer every image of a folder with a workspace's model, into
a CSV (prelabel: also into the review inbox, least confident first).

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

from capforge.data.images import IMAGE_SUFFIXES
from capforge.errors import DataError, ImageError
from capforge.evaluate import load_predictor
from capforge.inbox import Inbox, content_key
from capforge.modes import accepted
from capforge.workspace import Workspace

BATCH = 64
COLUMNS = ("file", "answer", "confidence", "accepted", "problem")


def image_files(folder: Path) -> list[Path]:
    """The image files in ``folder`` and its sub-folders, in name order."""
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder; give the folder that holds the images to read")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def answer_files(predictor: Any, folder: Path, min_confidence: float, progress: bool = True) -> list[dict[str, Any]]:
    """One row per image file of ``folder`` (file relative to it, answer, confidence, accepted,
    problem), in name order; an unreadable image keeps its row, with the reason."""
    files = image_files(folder)
    if not files:
        raise DataError(f"{folder} holds no images (allowed: {', '.join(sorted(IMAGE_SUFFIXES))})")
    rows: list[dict[str, Any]] = []
    for start in tqdm(range(0, len(files), BATCH), desc="predicting", unit="batch", disable=not progress):
        readable = []
        for path in files[start:start + BATCH]:
            name = path.relative_to(folder).as_posix()
            try:
                readable.append((name, predictor.preprocessing.open(path)))
            except ImageError as exc:
                problem = str(exc).split(": ", 1)[-1]  # the row names the file already
                rows.append({"file": name, "answer": "", "confidence": 0.0, "accepted": False, "problem": problem})
        answers = predictor.predict([image for _, image in readable]) if readable else []
        for (name, _), answer in zip(readable, answers):
            rows.append({"file": name, "answer": answer.text, "confidence": round(answer.confidence, 6),
                         "accepted": accepted(answer.confidence, min_confidence), "problem": ""})
    return sorted(rows, key=lambda row: row["file"])


def write_rows(rows: list[dict[str, Any]], out: Path, columns: tuple[str, ...] = COLUMNS) -> None:
    """Write ``rows`` as a CSV, under a temporary name until complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".part")
    with partial.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(partial, out)


def predict_folder(workspace: Workspace, settings: Mapping[str, Any], folder: Path, out: Path,
                   progress: bool = True) -> dict[str, Any]:
    """Write one CSV row per image of ``folder`` to ``out``; return the counts and the model used."""
    predictor, source = load_predictor(workspace)
    rows = answer_files(predictor, folder, settings["MIN_CONFIDENCE"], progress)
    write_rows(rows, out)
    return {"images": len(rows), "accepted": sum(r["accepted"] for r in rows),
            "unreadable": sum(bool(r["problem"]) for r in rows), "model": source}


PRELABELS = "prelabels.csv"


def prelabel_folder(workspace: Workspace, settings: Mapping[str, Any], folder: Path,
                    progress: bool = True) -> dict[str, Any]:
    """Pre-label the unlabelled images of ``folder``: the model's answers go into
    ``FOLDER/prelabels.csv`` (least confident first: the order to check them in) and each
    readable image into the review inbox with its answer, so a person only corrects."""
    predictor, source = load_predictor(workspace)
    rows = answer_files(predictor, folder, settings["MIN_CONFIDENCE"], progress)
    rows.sort(key=lambda row: (bool(row["problem"]), row["confidence"]))
    inbox = Inbox(workspace, settings)
    version = predictor.manifest.get("exported_at", source)  # a checkpoint (no export yet) names itself
    added = full = 0
    for row in rows:
        if row["problem"]:
            continue
        data = (folder / row["file"]).read_bytes()
        record = {"source": f"prelabel of {row['file']}", "answer": row["answer"], "confidence": row["confidence"],
                  "accepted": row["accepted"], "model_version": version}
        if inbox.find(content_key(data)) is not None:
            continue
        if inbox.add(data, Path(row["file"]).suffix.lower(), record) is None:
            full += 1
        else:
            added += 1
    write_rows(rows, folder / PRELABELS, ("file", "answer", "confidence", "problem"))
    return {"images": len(rows), "inbox": added, "inbox_full": full, "model": source,
            "unreadable": sum(bool(r["problem"]) for r in rows), "csv": folder / PRELABELS}
