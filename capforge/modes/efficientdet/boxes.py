"""Box labels for click captchas: Pascal VOC XML (one file per image) and YOLO text files.

A YOLO label ``img.txt`` holds ``class cx cy w h`` per line (normalised to [0, 1]); the class
names are in a ``classes.txt`` beside it or in a parent folder. Malformed files raise DataError
naming the file (and line); nothing is ever changed or removed here.

>>> Box("a", 10, 5, 30, 25).area
400
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from capforge.errors import DataError

CLASSES_FILE = "classes.txt"


@dataclass(frozen=True)
class Box:
    """A labelled box in pixel corners."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def area(self) -> float:
        return max(0.0, self.x2 - self.x1) * max(0.0, self.y2 - self.y1)

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2

    def problem(self, width: int, height: int, classes: set[str] | None) -> str | None:
        """Why this box cannot be trained on, or None."""
        if self.x2 <= self.x1 or self.y2 <= self.y1:
            return f"box {self.label!r} has no area ({self.x1:g},{self.y1:g})-({self.x2:g},{self.y2:g})"
        if self.x1 < 0 or self.y1 < 0 or self.x2 > width or self.y2 > height:
            return (f"box {self.label!r} ({self.x1:g},{self.y1:g})-({self.x2:g},{self.y2:g}) is outside the "
                    f"{width}x{height} image")
        if classes is not None and self.label not in classes:
            return f"box class {self.label!r} is not in CHARSET"
        return None


def read_voc(path: Path) -> tuple[list[Box], tuple[int, int] | None]:
    """Boxes of a VOC XML file, and the (width, height) it declares (None if absent)."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DataError(f"{path}: not a readable VOC XML file ({exc})") from None
    size = root.find("size")
    declared = None
    try:
        if size is not None:
            declared = (int(float(size.findtext("width", "0"))), int(float(size.findtext("height", "0"))))
        boxes = []
        for number, obj in enumerate(root.iter("object"), 1):
            name = (obj.findtext("name") or "").strip()
            box = obj.find("bndbox")
            if not name or box is None:
                raise DataError(f"{path}: object {number} needs <name> and <bndbox>")
            corners = [float(box.findtext(tag, "nan")) for tag in ("xmin", "ymin", "xmax", "ymax")]
            if any(c != c for c in corners):  # NaN: a corner is missing
                raise DataError(f"{path}: object {number} ({name!r}) lacks one of xmin, ymin, xmax, ymax")
            boxes.append(Box(name, *corners))
    except ValueError as exc:
        raise DataError(f"{path}: a number in it cannot be read ({exc})") from None
    return boxes, declared


def voc_xml(image_name: str, width: int, height: int, boxes: list[Box]) -> bytes:
    """A VOC XML document (what click-captcha generators write)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = image_name
    size = ET.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    for box in boxes:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = box.label
        corners = ET.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), (box.x1, box.y1, box.x2, box.y2)):
            ET.SubElement(corners, tag).text = str(int(round(value)))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def find_classes(folder: Path, stop: Path) -> list[str] | None:
    """The class names of the nearest classes.txt from ``folder`` up to ``stop``."""
    for candidate in (folder, *folder.parents):
        if (candidate / CLASSES_FILE).is_file():
            names = [n.strip() for n in (candidate / CLASSES_FILE).read_text(encoding="utf-8").splitlines()]
            return [n for n in names if n]
        if candidate == stop:
            break
    return None


def read_yolo(path: Path, classes: list[str], width: int, height: int) -> list[Box]:
    """Boxes of a YOLO label file, in pixels of a ``width`` x ``height`` image."""
    boxes = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            index, cx, cy, w, h = int(parts[0]), *map(float, parts[1:5])
            if len(parts) != 5:
                raise ValueError
        except ValueError:
            raise DataError(f"{path} line {number}: expected 'class cx cy w h'; received {line!r}") from None
        if not 0 <= index < len(classes):
            raise DataError(f"{path} line {number}: class {index} is not in {CLASSES_FILE} "
                            f"({len(classes)} classes)")
        boxes.append(Box(classes[index], (cx - w / 2) * width, (cy - h / 2) * height,
                         (cx + w / 2) * width, (cy + h / 2) * height))
    return boxes


def label_file_of(image: Path) -> Path | None:
    """The VOC (.xml) or YOLO (.txt) label file paired with an image, if any."""
    for suffix in (".xml", ".txt"):
        candidate = image.with_suffix(suffix)
        if candidate.is_file() and candidate.name != CLASSES_FILE:
            return candidate
    return None


def read_boxes(image: Path, width: int, height: int, root: Path) -> list[Box]:
    """The boxes of ``image`` from its paired VOC or YOLO file; DataError if none or malformed."""
    label = label_file_of(image)
    if label is None:
        raise DataError(f"{image.name} has no label file ({image.stem}.xml or {image.stem}.txt)")
    if label.suffix == ".xml":
        return read_voc(label)[0]
    classes = find_classes(label.parent, root)
    if classes is None:
        raise DataError(f"{label} is a YOLO label but no {CLASSES_FILE} was found beside it or above")
    return read_yolo(label, classes, width, height)
