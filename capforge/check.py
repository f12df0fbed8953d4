"""check_file: decode every image of a workspace, find what is wrong, and suggest settings.

Nothing is ever deleted: ``quarantine`` moves bad files into ``data/quarantine/<split>/`` and
appends the reason to ``data/quarantine/REASONS.tsv``.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from tqdm import tqdm

from capforge.atomic import write_atomically
from capforge.data.images import Geometry, ImageHook, Preprocessing, geometry, iter_images, merge_frames, open_frames
from capforge.data.labels import configured_charset
from capforge.models.backbones import cpu_warning
from capforge.modes.efficientdet.boxes import label_file_of, read_boxes
from capforge.modes.efficientdet.anchors import best_anchor_scale
from capforge.errors import DataError, ImageError
from capforge.modes.answer_rules import rule_of
from capforge.modes import MODE_CLASSES, label_reader
from capforge.workspace import Workspace

# Problems that make a file unusable for training, in the order they are reported.
KINDS = {
    "unreadable": "corrupt, empty or unsupported image",
    "no_label": "no label could be read for the file",
    "unknown_symbols": "label uses characters outside CHARSET",
    "too_long": "label is longer than CAPTCHA_LENGTH (only where the mode has a maximum length)",
    "label_conflict": "the same image carries different labels",
    "duplicate": "the same image appears more than once in a split",
    "cross_split": "the same image is in two splits (leaks test data into training)",
    "bad_boxes": "box labels missing, malformed, outside the image or of an unknown class",
    "out_of_range": "a measured label (an angle, a position) outside what the image allows",
    "not_answerable": "the ANSWER rule cannot answer the label (ANSWER = 'arithmetic': not an expression)",
    "wrong_answer": "the labels file's answer is not what the ANSWER rule answers for the label",
}


@dataclass
class Finding:
    path: Path
    kind: str
    detail: str


@dataclass
class Report:
    """What ``check`` found: problems, per-split counts, statistics and suggested settings."""

    findings: list[Finding] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    lengths: Counter = field(default_factory=Counter)
    symbols: Counter = field(default_factory=Counter)
    box_sizes: list[tuple[float, float]] = field(default_factory=list)
    input_boxes: list[tuple[float, float, float, float]] = field(default_factory=list)  # model-input pixels
    colour: list[float] = field(default_factory=list)  # colourfulness of each image
    animated: list[int] = field(default_factory=list)  # the frame count of each animated image
    unused_unlabelled: int = 0  # images in data/unlabelled that the mode does not learn from
    suggestions: dict[str, Any] = field(default_factory=dict)
    reasoning: str = ""


COLOURFUL = 0.08  # median colourfulness (mean channel spread, 0-1) above which colour is kept


def colourfulness(image: Any) -> float:
    """How much colour an image holds: the mean spread between its channels on a thumbnail (0-1)."""
    small = image.convert("RGB").resize((32, 32))
    array = np.asarray(small, dtype=np.float32)
    return float((array.max(-1) - array.min(-1)).mean() / 255.0)


def charset_value(symbols: Counter) -> str | list[str]:
    """CHARSET as settings.py writes it: a string of characters, or a list of class names."""
    ordered = sorted(symbols)
    return "".join(ordered) if all(len(s) == 1 for s in ordered) else ordered


# Below this many labelled text images check_file.py suggests SYNTHETIC: rkn6 from 300 labels read
# nothing without drawn captchas, and a site that reads anyway lost little to them as a warm-up
# (bench/results/unlabelled.md).
FEW_LABELS = 2000


def suggest(sizes: list[tuple[int, int]], symbols: Counter, lengths: Counter, mode: str,
            colour: list[float] = ()) -> tuple[dict[str, Any], str]:
    """Suggested input size and colour (the mode's ``suggest_input``), CHARSET, CAPTCHA_LENGTH
    where the mode has a maximum, and training settings for the charset's size (the mode's
    ``suggest_training``), for these images, with one line of reasoning."""
    if not sizes:
        return {}, ""
    mode_cls = MODE_CLASSES[mode]
    out, reason = mode_cls.suggest_input(sizes, lengths, bool(colour) and statistics.median(colour) > COLOURFUL)
    if symbols:
        out["CHARSET"] = charset_value(symbols)
    if lengths and mode_cls.length_capped:
        out["CAPTCHA_LENGTH"] = max(lengths)
    training, why = mode_cls.suggest_training(len(symbols))
    return out | training, "; ".join(filter(None, (reason, why)))


def _check_boxes(path: Path, root: Path, size: tuple[int, int], allowed: set[str] | None,
                 report: Report, placed: Geometry) -> str | None:
    """Read and validate the boxes of a click-captcha image; return the first problem."""
    try:
        boxes = read_boxes(path, size[0], size[1], root)
    except DataError as exc:
        return str(exc)
    if not boxes:
        return "its label file holds no boxes"
    problems = [p for p in (b.problem(size[0], size[1], allowed) for b in boxes) if p]
    if problems:
        return problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
    report.box_sizes += [(b.x2 - b.x1, b.y2 - b.y1) for b in boxes]
    report.input_boxes += [(*placed.to_input(b.x1, b.y1), *placed.to_input(b.x2, b.y2)) for b in boxes]
    report.symbols.update(b.label for b in boxes)
    return None


def _pixel_hash(*images: Any) -> str:
    digest = hashlib.sha1()
    for image in images:
        digest.update(f"{image.mode}{image.size}".encode())
        digest.update(image.tobytes())
    return digest.hexdigest()


def _same_image(first: tuple[str, Path, str | None], split: str, path: Path, label: str | None) -> Finding:
    """The finding for an image whose pixels ``first`` (split, path, label) already has. An
    unlabelled copy of a validation or test image is a leak: training would learn what is judged."""
    first_split, first_path, first_label = first
    if split == "unlabelled" and first_split in ("validation", "test"):
        return Finding(path, "cross_split", f"same image as {first_split}/{first_path.name}: training would learn "
                                            f"a {first_split} image from data/unlabelled")
    if "unlabelled" in (split, first_split):
        return Finding(path, "duplicate", f"same image as {first_split}/{first_path.name}")
    if first_label != label:
        return Finding(path, "label_conflict", f"{first_path.name} has label {first_label!r}, this has {label!r}")
    if first_split != split:
        return Finding(path, "cross_split", f"same image as {first_split}/{first_path.name}")
    return Finding(path, "duplicate", f"same image as {first_path.name}")


def check(workspace: Workspace, settings: Mapping[str, Any],
            label_hook: Any = None, image_hook: ImageHook | None = None,
            progress: bool = True) -> Report:
    """Scan the pool and the train / validation / test splits of ``workspace``."""
    report = Report()
    reader = label_reader(settings, label_hook)
    mode_cls = MODE_CLASSES[settings["MODE"]]
    charset = configured_charset(settings)
    allowed = set(charset) if charset else None
    reading = Preprocessing.from_settings(settings)
    check_labels = not mode_cls.labels_from_boxes  # box files are checked instead
    seen: dict[str, tuple[str, Path, str | None]] = {}
    splits = [*workspace.data_splits(), *([("unlabelled", workspace.unlabelled)] if mode_cls.learns_unlabelled else [])]
    files = [(split, root, path) for split, root in splits for path in iter_images(root)]
    if not mode_cls.learns_unlabelled and workspace.unlabelled.is_dir():
        report.unused_unlabelled = sum(1 for _ in iter_images(workspace.unlabelled))
    for split, root, path in tqdm(files, desc="checking", unit="img", disable=not progress):
        report.counts[split] = report.counts.get(split, 0) + 1
        try:
            frames = open_frames(path)
            image = merge_frames(frames, reading.frames, reading.frame_index)  # as the model will read it
            if image_hook is not None:
                image = image_hook(image)
        except ImageError as exc:
            report.findings.append(Finding(path, "unreadable", str(exc).split(": ", 1)[-1]))
            continue
        if len(frames) > 1:
            report.animated.append(len(frames))
        report.sizes.append(image.size)
        report.colour.append(colourfulness(image))
        if split == "unlabelled":
            pass  # no label to check: only that it reads, and whether it is a copy of a labelled image
        elif mode_cls.labels_from_boxes:
            placed = geometry(image.width, image.height, Preprocessing.from_settings(settings))
            problem = _check_boxes(path, root, image.size, allowed, report, placed)
            if problem:
                report.findings.append(Finding(path, "bad_boxes", problem))
                continue
        label = reader.label(path, root) if check_labels and split != "unlabelled" else None
        if check_labels and split != "unlabelled":
            if label is None:
                report.findings.append(Finding(path, "no_label", "no label in its name or labels file"))
                continue
            problem = mode_cls.label_problem(label, settings, allowed, image.size)
            if problem and problem[0] != "too_long":
                report.findings.append(Finding(path, *problem))
                continue
            symbols = mode_cls.tokens(label)
            report.lengths[len(symbols)] += 1  # every label counts, so the suggestions cover them all
            report.symbols.update(symbols)
            if problem:
                report.findings.append(Finding(path, *problem))
                continue
            given, rule = reader.answer(path), rule_of(settings)
            if given is not None and given != rule.answer_of(label):
                report.findings.append(Finding(path, "wrong_answer", (
                    f"label {label!r} answers {rule.answer_of(label)!r} under ANSWER = {rule.name!r}; the labels "
                    f"file says {given!r}")))
                continue
        # an animation is the same only with every frame the same (the first frames of a site may all be blank)
        digest = _pixel_hash(*frames) if len(frames) > 1 else _pixel_hash(image)
        if digest in seen:
            report.findings.append(_same_image(seen[digest], split, path, label))
            continue
        seen[digest] = (split, path, label)
    report.suggestions, report.reasoning = suggest(report.sizes, report.symbols, report.lengths, mode_cls.name,
                                                   report.colour)
    if report.input_boxes:
        report.suggestions["ANCHOR_SCALE"] = suggest_anchor_scale(report.input_boxes, settings)
    labelled = sum(n for split, n in report.counts.items() if split not in ("test", "unlabelled"))  # what teaches
    if 0 < labelled < FEW_LABELS and "SYNTHETIC" in {o.name for o in mode_cls.options} and not settings["SYNTHETIC"]:
        report.suggestions["SYNTHETIC"] = FEW_LABELS
        report.reasoning += (f"; {labelled} labelled images are few: SYNTHETIC draws captchas that train.py learns "
                             "until the model reads (bench/results/unlabelled.md)")
    return report


def suggest_anchor_scale(boxes: list[tuple[float, float, float, float]], settings: Mapping[str, Any],
                         sample: int = 2000) -> float:
    """The anchor scale that fits these boxes (model-input pixels) at the configured input size."""
    chosen = np.asarray(boxes, dtype=np.float64)
    if len(chosen) > sample:
        chosen = chosen[np.random.default_rng(0).choice(len(chosen), sample, replace=False)]
    return best_anchor_scale(chosen, settings["IMAGE_HEIGHT"], settings["IMAGE_WIDTH"])


def format_report(report: Report, workspace: Workspace, settings: Mapping[str, Any]) -> str:
    """A readable summary: problems by kind (every file named), statistics, suggestions."""
    lines = ["images: " + (", ".join(f"{k} {v}" for k, v in report.counts.items()) or "none found")]
    by_kind: dict[str, list[Finding]] = {}
    for finding in report.findings:
        by_kind.setdefault(finding.kind, []).append(finding)
    for kind, description in KINDS.items():
        for finding in by_kind.get(kind, []):
            lines.append(f"  {kind:<15} {workspace.relative(finding.path)}: {finding.detail}")
    warning = cpu_warning(settings["BACKBONE"])
    if warning:
        lines.append(f"note: {warning}")
    if report.unused_unlabelled:
        lines.append(f"data/unlabelled: {report.unused_unlabelled} images, which MODE = {settings['MODE']!r} does not "
                     "learn from (text and class modes do)")
    if report.findings:
        summary = ", ".join(f"{len(v)} {k}" for k, v in by_kind.items())
        lines.append(f"problems: {summary}; `check_file.py --fix` moves them to data/quarantine")
    else:
        lines.append("problems: none")
    if report.sizes:
        widths = sorted(w for w, _ in report.sizes)
        heights = sorted(h for _, h in report.sizes)
        lines.append(f"width  min {widths[0]} / median {statistics.median(widths):g} / max {widths[-1]}")
        lines.append(f"height min {heights[0]} / median {statistics.median(heights):g} / max {heights[-1]}")
    if report.animated:
        reads = ("only their first frame: where a site draws its characters across frames, set FRAMES = 'darkest' "
                 "(dark text), 'lightest' or 'median'" if settings["FRAMES"] == "first" else "them merged")
        lines.append(f"{len(report.animated)} animated images ({min(report.animated)}-{max(report.animated)} "
                     f"frames); FRAMES = {settings['FRAMES']!r} reads {reads}")
    if report.box_sizes:
        box_w = sorted(w for w, _ in report.box_sizes)
        box_h = sorted(h for _, h in report.box_sizes)
        lines.append(f"{len(box_w)} boxes; width min {box_w[0]:g} / median {statistics.median(box_w):g} / max "
                     f"{box_w[-1]:g}; height min {box_h[0]:g} / median {statistics.median(box_h):g} / max {box_h[-1]:g}")
    if report.lengths:
        lines.append("label length: " + ", ".join(f"{k}: {v}" for k, v in sorted(report.lengths.items())))
    if report.symbols:
        common = report.symbols.most_common()
        lines.append(f"{len(common)} distinct symbols: "
                     + " ".join(f"{s}:{n}" for s, n in common[:60]) + (" ..." if len(common) > 60 else ""))
    if report.suggestions:
        lines.append(f"suggested settings (current value in brackets); {report.reasoning}:")
        for key, value in report.suggestions.items():
            lines.append(f"  {key} = {value!r}  [{settings[key]!r}]")
    return "\n".join(lines)


def save_report(report: Report, path: Path) -> None:
    """Write the full report as JSON (atomically)."""
    data = {
        "counts": report.counts,
        "findings": [{**asdict(f), "path": str(f.path)} for f in report.findings],
        "label_lengths": dict(report.lengths),
        "symbols": dict(report.symbols),
        "suggestions": report.suggestions,
        "reasoning": report.reasoning,
        "animated_images": len(report.animated),
    }
    write_atomically(path, json.dumps(data, indent=2, ensure_ascii=False).encode())


def quarantine(findings: list[Finding], workspace: Workspace) -> list[tuple[Path, Path]]:
    """Move each bad image (with its box label file) to data/quarantine; return (from, to) pairs."""
    moved = []
    log = workspace.quarantine / "REASONS.tsv"
    for finding in findings:
        split = workspace.split_of(finding.path)
        target_dir = workspace.quarantine / split
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / finding.path.name
        n = 1
        while target.exists():  # never overwrite an earlier quarantined file
            target = target_dir / f"{finding.path.stem}.{n}{finding.path.suffix}"
            n += 1
        label = label_file_of(finding.path)
        os.replace(finding.path, target)
        if label is not None:  # a click captcha's boxes travel with it
            os.replace(label, target.with_suffix(label.suffix))
        with log.open("a", encoding="utf-8") as out:
            out.write(f"{workspace.relative(finding.path)}\t{workspace.relative(target)}\t"
                      f"{finding.kind}\t{finding.detail}\n")
        moved.append((finding.path, target))
    return moved
