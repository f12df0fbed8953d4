"""pack_dataset: the splits as TFRecords, with a manifest that says what shaped them.

Schema ``capforge.tfrecord/1``, one ``tf.train.Example`` per image:

- ``image``: the model input after the shared preprocessing, raw uint8 bytes of shape
  ``[IMAGE_HEIGHT, IMAGE_WIDTH, IMAGE_CHANNELS]`` (row-major);
- ``label``: the label text, UTF-8 (ids are looked up in the input pipeline, so changing the
  charset needs no repack);
- ``source``: the image's path relative to the workspace;
- MODE=EFFICIENTDET only: ``boxes``, float32 corners ``x1, y1, x2, y2`` per object in model-input
  pixels (mapped through the same resize and padding as the image), and ``classes``, the
  class name of each object (UTF-8). The manifest's ``labels`` are then lists of class names.

Everything is written into ``packed.tmp/`` (each shard as ``.part`` first, renamed when
complete) and the folder replaces ``packed/`` only once the manifest is written: an
interrupted pack leaves the previous pack, never a half one.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Mapping

from tqdm import tqdm

from capforge.version import __version__
from capforge.data.images import Geometry, Preprocessing, geometry, iter_images, preprocess_to_uint8
from capforge.data.labels import LabelReader
from capforge.errors import CapforgeError, DataError, disk_space
from capforge.modes import MODE_CLASSES, label_reader
from capforge.modes.efficientdet.boxes import read_boxes
from capforge.synthetic import synthetic_items
from capforge.workspace import SPLITS, Workspace, hook

SCHEMA = "capforge.tfrecord/1"
MANIFEST = "manifest.json"
SHAPING = ("MODE", "IMAGE_HEIGHT", "IMAGE_WIDTH", "IMAGE_CHANNELS", "RESIZE", "CASE_SENSITIVE",
           "LABEL_SEPARATOR", "SYNTHETIC")


def shaping_settings(workspace: Workspace, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings (and hook file) that change packed bytes or labels."""
    shaping = {key: settings.get(key) for key in SHAPING}  # a mode's own: None under the others
    utils = workspace.root / "utils.py"
    shaping["utils.py"] = hashlib.sha1(utils.read_bytes()).hexdigest() if utils.is_file() else None
    return shaping


def check_pack_matches(manifest: Mapping[str, Any], workspace: Workspace,
                       settings: Mapping[str, Any]) -> None:
    """Raise DataError naming each setting that changed since the data was packed."""
    now = shaping_settings(workspace, settings)
    packed = manifest.get("shaping", {})
    # a setting newer than the pack is absent from it: its off value (None, 0) is what was packed
    changed = [f"{k} (packed {packed.get(k)!r}, now {now[k]!r})" for k in now
               if packed.get(k) != now[k] and (k in packed or now[k] not in (None, 0))]
    if changed:
        raise DataError("the packed data no longer matches the settings: " + "; ".join(changed)
                        + ". Run pack_dataset.py again")


def read_manifest(workspace: Workspace) -> dict[str, Any]:
    path = workspace.packed / MANIFEST
    if not path.is_file():
        raise DataError(f"no packed data in {workspace.relative(workspace.packed)}; run pack_dataset.py first")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("schema") != SCHEMA:
        raise DataError(f"{path} has schema {manifest.get('schema')!r}; this capforge reads {SCHEMA}. "
                        "Run pack_dataset.py again")
    return manifest


Encoded = tuple[bytes, list[float], list[str], Geometry]


def _encode(job: tuple[str, list[str], Preprocessing, bool | None]) -> list[Encoded | None]:
    """Worker: preprocess images and, for detection (``fold_case`` not None), map their boxes
    into the model input. None for an unreadable image or box file. Imports no TensorFlow."""
    root, paths, preprocessing, fold_case = job
    extra = hook(Workspace(Path(root)), "utils", "preprocess_image")
    out: list[Encoded | None] = []
    for path in paths:
        try:
            image = preprocessing.open(path)
            if extra is not None:
                image = extra(image)
            corners: list[float] = []
            classes: list[str] = []
            placed = geometry(image.width, image.height, preprocessing)
            if fold_case is not None:
                for box in read_boxes(Path(path), image.width, image.height, Path(root)):
                    corners += [*placed.to_input(box.x1, box.y1), *placed.to_input(box.x2, box.y2)]
                    classes.append(box.label.lower() if fold_case else box.label)
            out.append((preprocess_to_uint8(image, preprocessing).tobytes(), corners, classes, placed))
        except CapforgeError:
            out.append(None)
    return out


def _example(image: bytes, label: str, source: str, boxes: list[float] | None = None,
             classes: list[str] | None = None) -> bytes:
    import tensorflow as tf

    def strings(values: list[str]) -> Any:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode("utf-8") for v in values]))

    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
        "label": strings([label]),
        "source": strings([source]),
    }
    if boxes is not None and classes is not None:
        feature["boxes"] = tf.train.Feature(float_list=tf.train.FloatList(value=boxes))
        feature["classes"] = strings(classes)
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_shard(path: Path, records: list[bytes], compression: str) -> None:
    """Write ``records`` to one TFRecord shard, whole or not at all."""
    import tensorflow as tf

    partial = path.with_name(path.name + ".part")
    with tf.io.TFRecordWriter(str(partial), options=compression or None) as writer:
        for record in records:
            writer.write(record)
    os.replace(partial, path)


def pack(workspace: Workspace, settings: Mapping[str, Any], workers: int | None = None,
         progress: bool = True) -> dict[str, Any]:
    """Pack train / validation / test; return the manifest."""
    preprocessing = Preprocessing.from_settings(settings)
    reader = label_reader(settings, hook(workspace, "utils", "label_from_path"))
    staging = workspace.root / "packed.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    manifest: dict[str, Any] = {
        "schema": SCHEMA, "capforge_version": __version__, "preprocessing": preprocessing.to_dict(),
        "shaping": shaping_settings(workspace, settings),
        "shaping_hash": hashlib.sha256(json.dumps(shaping_settings(workspace, settings), sort_keys=True)
                                       .encode()).hexdigest()[:16],
        "compression": settings["PACK_COMPRESSION"],
        "splits": {}, "skipped": {},
    }
    kept = f"{workspace.relative(workspace.packed)}/ is still the one in use" if workspace.packed.exists() \
        else "nothing was packed"
    with disk_space("writing packed.tmp/", kept, staging):
        _pack_splits(workspace, preprocessing, reader, settings, staging, manifest, workers, progress)
        if not manifest["splits"]["train"]["count"]:
            raise DataError("data/train has no usable images; run split_dataset.py first")
        partial = staging / (MANIFEST + ".part")
        partial.write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
        os.replace(partial, staging / MANIFEST)
    old = workspace.root / "packed.old"
    shutil.rmtree(old, ignore_errors=True)
    if workspace.packed.exists():
        os.replace(workspace.packed, old)
    os.replace(staging, workspace.packed)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


def _pack_splits(workspace: Workspace, preprocessing: Preprocessing, reader: LabelReader,
                 settings: Mapping[str, Any], staging: Path, manifest: dict[str, Any],
                 workers: int | None, progress: bool) -> None:
    """Encode every split in worker processes and write its shards into ``staging``; the images of
    data/unlabelled too (split ``unlabelled``, empty labels) for a mode that learns from them, less
    any copy of a validation or test image; SYNTHETIC's drawn captchas as split ``synthetic``."""
    workers = workers or os.cpu_count() or 1
    context = multiprocessing.get_context("spawn")  # safe even when TensorFlow is loaded
    mode_cls = MODE_CLASSES[settings["MODE"]]
    detection = mode_cls.labels_from_boxes  # labels come from the box files
    unlabelled = mode_cls.learns_unlabelled and settings["UNLABELLED"] != "off"
    judged: set[bytes] = set()  # the validation and test images, as packed: none may come back unlabelled
    train: list[tuple[Path, str]] = []
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        for split in (*SPLITS, *(("unlabelled",) if unlabelled else ()), "synthetic"):
            if split == "synthetic":
                items = synthetic_items(workspace, settings, train, progress)
            else:
                folder = workspace.unlabelled if split == "unlabelled" else workspace.split_dir(split)
                items = [(p, "" if split == "unlabelled" else p.stem if detection else reader.label(p, folder))
                         for p in iter_images(folder)]
            skipped = [workspace.relative(p) for p, label in items if label is None]
            items = [(p, label) for p, label in items if label is not None]
            train = items if split == "train" else train
            chunks = [items[i:i + 64] for i in range(0, len(items), 64)]
            fold_case = (not settings["CASE_SENSITIVE"]) if detection else None
            jobs = [(str(workspace.root), [str(p) for p, _ in c], preprocessing, fold_case) for c in chunks]
            records: list[bytes] = []
            labels: list[Any] = []
            bar = tqdm(total=len(items), desc=f"packing {split}", unit="img", disable=not progress)
            for chunk, encoded in zip(chunks, pool.map(_encode, jobs)):
                for (path, label), item in zip(chunk, encoded):
                    if item is None:
                        skipped.append(workspace.relative(path))
                        continue
                    image, boxes, classes, placed = item
                    digest = hashlib.sha1(image).digest()
                    if split in ("validation", "test"):
                        judged.add(digest)
                    elif split == "unlabelled" and digest in judged:  # a leak: check_file.py names it
                        skipped.append(workspace.relative(path))
                        continue
                    label = mode_cls.packed_label(label, placed)  # a position moves into the model input
                    records.append(_example(image, label, workspace.relative(path),
                                            *((boxes, classes) if detection else ())))
                    labels.append(classes if detection else label)
                bar.update(len(chunk))
            bar.close()
            size = settings["PACK_SHARD_SIZE"]
            count = max(1, -(-len(records) // size))
            shards = [f"{split}-{i:05d}-of-{count:05d}.tfrecord" for i in range(count)]
            for i, name in enumerate(shards):
                write_shard(staging / name, records[i * size:(i + 1) * size], settings["PACK_COMPRESSION"])
            manifest["splits"][split] = {"count": len(records), "shards": shards, "labels": labels}
            manifest["skipped"][split] = skipped
