"""``check_file.py --suspects``: labels that a model trained without them confidently disagrees with.

Every labelled image of train, validation and test is read by a model that never saw it: the
packed records of the three splits are dealt into ``folds`` folds by a hash of each image's path,
and for each fold a model trains on the other folds (in a scratch copy of the workspace: its
settings, its hooks and the re-sharded records) for ``minutes`` (0: for EPOCHS), then reads the fold's images
through the same predictor ``test.py`` uses before an export. An answer other than the label, at
``confidence`` or more, makes the image a suspect. ``reports/suspects.csv`` lists them, the most
confident first, and each is copied into the review inbox ahead of everything else, with the
model's reading pre-filled: a label given there renames the image where it lies (the inbox's
``origin``), and the label it had already confirms it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from capforge.errors import DataError, SettingsError
from capforge.modes import MODE_CLASSES
from capforge.workspace import SPLITS, Workspace

HOOKS = ("settings.py", "models.py", "utils.py")


@dataclass
class Suspect:
    path: str  # relative to the workspace
    split: str
    label: str
    reading: str
    confidence: float


def _records(workspace: Workspace, manifest: Mapping[str, Any]) -> list[tuple[str, str, bytes]]:
    """(split, source path, serialized record) of every packed image."""
    import tensorflow as tf

    from capforge.data.records import split_records

    found = []
    for split in SPLITS:
        for record in split_records(workspace, manifest, split):
            source = tf.io.parse_single_example(record, {"source": tf.io.FixedLenFeature([], tf.string)})["source"]
            found.append((split, source.numpy().decode("utf-8"), record.numpy()))
    return found


def fold_of(source: str, folds: int) -> int:
    """The fold of an image: a hash of its path, so the same image always lands in the same fold."""
    return int(hashlib.sha1(source.encode("utf-8")).hexdigest()[:8], 16) % folds


def _scratch_workspace(workspace: Workspace, manifest: Mapping[str, Any], root: Path,
                       splits: Mapping[str, list[bytes]], labels: Mapping[str, list[Any]]) -> Workspace:
    """A copy of ``workspace``'s settings and hooks whose packed splits are ``splits``."""
    from capforge.pack import MANIFEST, write_shard

    root.mkdir(parents=True)
    for name in HOOKS:
        if (workspace.root / name).is_file():
            shutil.copy2(workspace.root / name, root / name)
    scratch = Workspace(root)
    scratch.packed.mkdir(parents=True)
    copied = {**manifest, "splits": {}}
    for split, records in splits.items():
        name = f"{split}-00000-of-00001.tfrecord"
        write_shard(scratch.packed / name, records, manifest["compression"])
        copied["splits"][split] = {"count": len(records), "shards": [name], "labels": labels[split]}
    (scratch.packed / MANIFEST).write_text(json.dumps(copied, ensure_ascii=False))
    return scratch


def find_suspects(workspace: Workspace, settings: Mapping[str, Any], folds: int = 4, minutes: float = 2.0,
                  confidence: float = 0.9, progress: bool = True) -> dict[str, Any]:
    """Cross-validate every label (see the module); write reports/suspects.csv and .json and
    return the summary: the suspects, most confident first, and every disagreement (at any
    confidence, for choosing the threshold)."""
    from capforge.evaluate import CheckpointPredictor
    from capforge.pack import check_pack_matches, read_manifest
    from capforge.train import train

    mode_cls = MODE_CLASSES[settings["MODE"]]
    if mode_cls.labels_from_boxes or mode_cls.measure:
        raise SettingsError(f"--suspects reads text and class labels; MODE={settings['MODE']} labels are "
                            f"{'boxes' if mode_cls.labels_from_boxes else 'measured positions or angles'}")
    if folds < 2 or minutes < 0 or not 0 < confidence <= 1:
        raise SettingsError(f"--folds {folds}, --minutes {minutes}, --confidence {confidence}: folds must be "
                            "2 or more, minutes 0 or more, and the confidence between 0 and 1")
    manifest = read_manifest(workspace)
    check_pack_matches(manifest, workspace, settings)
    records = _records(workspace, manifest)
    labels = {source: label for split in SPLITS
              for source, label in zip((s for sp, s, _ in records if sp == split), manifest["splits"][split]["labels"])}
    if len(records) < 4 * folds:
        raise DataError(f"--suspects needs at least {4 * folds} packed images for {folds} folds; the pack holds "
                        f"{len(records)} (run split_dataset.py and pack_dataset.py)")
    disagreements: list[Suspect] = []  # every answer other than the label; suspects are the confident ones
    accuracy = []
    with tempfile.TemporaryDirectory(prefix=".suspects-", dir=workspace.root) as scratch_root:
        for fold in range(folds):
            held = [(split, source) for split, source, _ in records if fold_of(source, folds) == fold]
            rest = [(source, record) for _, source, record in records if fold_of(source, folds) != fold]
            check = rest[::10]  # validation: picks the checkpoint, from the training folds only
            train_part = [item for i, item in enumerate(rest) if i % 10]
            scratch = _scratch_workspace(
                workspace, manifest, Path(scratch_root) / f"fold{fold}",
                {"train": [r for _, r in train_part], "validation": [r for _, r in check], "test": []},
                {"train": [labels[s] for s, _ in train_part], "validation": [labels[s] for s, _ in check],
                 "test": []})
            if progress:
                print(f"fold {fold + 1} of {folds}: training on {len(train_part)} images, reading {len(held)}",
                      flush=True)
            train(scratch, settings, minutes or None, verbose=0)  # 0: EPOCHS, with early stopping
            predictor = CheckpointPredictor(scratch)
            present = [(split, source) for split, source in held  # files moved since packing are left out
                       if (workspace.root / source).is_file()]
            files = [workspace.root / source for _, source in present]
            answers = [answer for start in range(0, len(files), 64) for answer in predictor.predict(files[start:start + 64])]
            disagreements += [Suspect(source, split, labels[source], answer.text, round(answer.confidence, 4))
                              for (split, source), answer in zip(present, answers) if answer.text != labels[source]]
            right = sum(answer.text == labels[source] for (_, source), answer in zip(present, answers))
            accuracy.append(right / max(1, len(present)))
    disagreements.sort(key=lambda s: -s.confidence)
    summary = {"folds": folds, "minutes_per_fold": minutes, "confidence": confidence, "images": len(records),
               "fold_accuracy": [round(a, 4) for a in accuracy],
               "suspects": [asdict(s) for s in disagreements if s.confidence >= confidence],
               "disagreements": [asdict(s) for s in disagreements]}
    _write(workspace, summary)
    return summary


def _write(workspace: Workspace, summary: Mapping[str, Any]) -> None:
    """reports/suspects.json (the summary) and reports/suspects.csv (one row a suspect)."""
    from capforge.atomic import write_atomically

    folder = workspace.root / "reports"
    folder.mkdir(exist_ok=True)
    write_atomically(folder / "suspects.json", json.dumps(summary, indent=1, ensure_ascii=False).encode())
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["path", "split", "label", "reading", "confidence"])
    writer.writerows([s["path"], s["split"], s["label"], s["reading"], s["confidence"]] for s in summary["suspects"])
    write_atomically(folder / "suspects.csv", out.getvalue().encode("utf-8"))


def queue_for_review(workspace: Workspace, settings: Mapping[str, Any], summary: Mapping[str, Any]) -> int:
    """Copy every suspect into the review inbox, first in line; returns how many were queued (an
    image already there, or a full inbox, is not)."""
    from capforge.inbox import Inbox

    inbox = Inbox(workspace, settings)
    queued = 0
    for suspect in summary["suspects"]:
        path = workspace.root / suspect["path"]
        if not path.is_file():
            continue
        record = {"source": "label suspects (check_file.py --suspects)", "answer": suspect["reading"],
                  "confidence": suspect["confidence"], "origin": suspect["path"], "origin_split": suspect["split"],
                  "origin_label": suspect["label"]}
        queued += inbox.add(path.read_bytes(), path.suffix, record) is not None
    return queued
