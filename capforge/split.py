"""split_dataset: spread a pool of labelled images over train / validation / test.

The split is by ratio and seed, stratified by folder (each class folder of a whole-image mode
gives every split its share), groups identical files so that exact duplicates land on one side
(next to any copy already split), and is idempotent: the pool is moved, so a second run
finds nothing new. Every move is planned and checked before the first file moves: a file in
the way stops the whole split and nothing is overwritten.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from capforge.modes.efficientdet.boxes import CLASSES_FILE, label_file_of
from capforge.data.images import iter_images
from capforge.data.labels import LABEL_FILES, read_label_file
from capforge.errors import DataError
from capforge.workspace import RECENT, SPLITS, Workspace


@dataclass
class SplitPlan:
    moves: list[tuple[Path, Path]] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    kept: dict[str, list[Path]] = field(default_factory=dict)
    """Copies of images in a split this run gives no share (a test folder the user gave, with
    TEST_SPLIT = 0): they stay where they are, by split, since moving them would change that split
    and training on them would train on its images."""


def _digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def plan(workspace: Workspace, settings: Mapping[str, Any], source: Path,
         shares: Mapping[str, float] | None = None) -> SplitPlan:
    """Decide where each image of ``source`` goes; raise DataError if anything is in the way.
    ``shares``: the held-out splits and their shares (default: TEST_SPLIT and VALIDATION_SPLIT);
    the rest goes to train."""
    from tqdm import tqdm

    shares = shares or {"test": settings["TEST_SPLIT"], "validation": settings["VALIDATION_SPLIT"]}
    images = list(iter_images(source))
    placed = [(p, split) for split in (*SPLITS, RECENT) for p in iter_images(workspace.split_dir(split))]
    # Every file is hashed (duplicates stay together): seconds for tens of thousands of images.
    digests = [_digest(p) for p in tqdm([*images, *(p for p, _ in placed)], desc="hashing", unit="img")]
    already = {digest: split for digest, (_, split) in zip(digests[len(images):], placed)}
    groups: dict[str, list[Path]] = {}
    for path, digest in zip(images, digests):
        groups.setdefault(digest, []).append(path)
    result = SplitPlan()
    taking = {"train", *(name for name, share in shares.items() if share > 0)}
    by_folder: dict[Path, list[tuple[str, list[Path]]]] = {}
    for digest, paths in groups.items():
        if digest in already and already[digest] not in taking:
            result.kept.setdefault(already[digest], []).extend(paths)
        elif digest in already:  # a copy was split before: keep duplicates together
            result.counts[already[digest]] += len(paths)
            result.moves += [(p, workspace.split_dir(already[digest])) for p in paths]
        else:
            seeded = hashlib.sha1(f"{settings['SEED']}:{digest}".encode()).hexdigest()
            by_folder.setdefault(paths[0].parent, []).append((seeded, paths))
    fresh = _stratified(by_folder.values())
    total = sum(len(paths) for paths in fresh)
    quota = {name: round(total * share) for name, share in shares.items()}
    assigned: Counter = Counter()
    for paths in fresh:
        split = next((s for s in quota if assigned[s] < quota[s]), "train")
        assigned[split] += len(paths)
        result.counts[split] += len(paths)
        result.moves += [(p, workspace.split_dir(split)) for p in paths]
    result.moves = [(p, folder / p.relative_to(source)) for p, folder in result.moves]
    result.moves += [(label, dest.with_suffix(label.suffix)) for src, dest in list(result.moves)
                     if (label := label_file_of(src)) is not None]  # box labels travel with images
    in_the_way = [dest for _, dest in result.moves if dest.exists()]
    if in_the_way:
        raise DataError(f"{len(in_the_way)} file(s) already exist where images would go, e.g. "
                        f"{workspace.relative(in_the_way[0])}; rename or remove them first. "
                        "Nothing was moved.")
    targets = [dest for _, dest in result.moves]
    if len(set(targets)) != len(targets):
        raise DataError("two images would get the same name in one split; nothing was moved")
    return result


def _stratified(folders: Iterable[list[tuple[str, list[Path]]]]) -> list[list[Path]]:
    """All groups in the order the splits take them: by their seeded rank within their folder as
    a share of it (rank + 0.5 of n), so that every folder (a class, for whole-image modes) gives
    each split its share and a class of one or two images stays in training (a plain random
    split of a few photos per class leaves some classes far fewer to learn from than others)."""
    ordered = []
    for groups in folders:
        ranked = sorted(groups)
        ordered += [((rank + 0.5) / len(ranked), seeded, paths) for rank, (seeded, paths) in enumerate(ranked)]
    return [paths for _, _, paths in sorted(ordered, key=lambda item: item[:2])]


def _carry_labels(source_file: Path, labels: dict[str, list[str]], dest: Path) -> None:
    """Append the label (and answer) of a moved file to the labels file of its new folder."""
    name = dest.name
    if source_file.name not in labels:
        return
    cells = labels[source_file.name]
    csv_file, txt_file = dest.parent / "labels.csv", dest.parent / "labels.txt"
    if csv_file.exists() and not txt_file.exists():
        row = io.StringIO()
        csv.writer(row).writerow([name, *cells])
        with csv_file.open("a", encoding="utf-8", newline="") as out:
            out.write(row.getvalue())
    else:
        with txt_file.open("a", encoding="utf-8") as out:
            out.write("\t".join([name, *cells]) + "\n")


def split(workspace: Workspace, settings: Mapping[str, Any], source: Path | None = None,
          shares: Mapping[str, float] | None = None) -> SplitPlan:
    """Move (from the pool) or copy (from any other ``source``) images into the splits
    (``shares``: see :func:`plan`)."""
    source = (source or workspace.pool).resolve()
    if not source.is_dir():
        raise DataError(f"{source} is not a folder")
    copying = source != workspace.pool.resolve()
    result = plan(workspace, settings, source, shares)
    label_files: dict[Path, dict[str, list[str]]] = {}
    classes = source / CLASSES_FILE
    for split_name in (*SPLITS, *((RECENT,) if result.counts[RECENT] else ())):
        if classes.is_file() and not (workspace.split_dir(split_name) / CLASSES_FILE).exists():
            workspace.split_dir(split_name).mkdir(parents=True, exist_ok=True)
            shutil.copy2(classes, workspace.split_dir(split_name) / CLASSES_FILE)
    for src, dest in result.moves:
        if src.parent not in label_files:
            found = [src.parent / n for n in LABEL_FILES if (src.parent / n).is_file()]
            label_files[src.parent] = read_label_file(found[0]) if found else {}
        dest.parent.mkdir(parents=True, exist_ok=True)
        if copying:
            partial = dest.with_name(f".{dest.name}.part")
            shutil.copy2(src, partial)
            os.replace(partial, dest)
        else:
            os.replace(src, dest)
        _carry_labels(src, label_files[src.parent], dest)
    missing = [dest for _, dest in result.moves if not dest.is_file()]
    if missing:  # cannot happen unless the disk misbehaves; say so rather than hide it
        raise DataError(f"{len(missing)} file(s) did not arrive, e.g. {missing[0]}")
    return result
