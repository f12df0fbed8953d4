"""Labels: where an image's label comes from, and the charset that labels are written in.

An image's label is found, in this order: the workspace hook ``utils.label_from_path``; a
``labels.txt`` (``name<TAB>label`` or ``name label`` per line) or ``labels.csv`` (``name,label``)
in the image's folder (a third column, ``name<TAB>12+15<TAB>27`` or ``name,12+15,27``, may give
the answer the site wants, which check_file.py holds the ANSWER rule to); its class sub-folder
(NUM_CLASSES only); the file name up to the first separator character.

>>> label_from_name("aB3x_17322d.png", "_-"), label_from_name("abcd-0.png", "_-")
('aB3x', 'abcd')
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from capforge.errors import DataError

LABEL_FILES = ("labels.txt", "labels.csv")
LabelHook = Callable[[Path], "str | None"]


def label_from_name(filename: str, separators: str) -> str | None:
    """The label in a file name: the stem up to the first separator character."""
    stem = Path(filename).stem
    cut = min((i for i in (stem.find(s) for s in separators) if i >= 0), default=len(stem))
    return stem[:cut] or None


def read_label_file(path: Path) -> dict[str, list[str]]:
    """Parse a ``labels.txt`` or ``labels.csv``: each file name's cells (the label, then the answer
    where a third column gives one); a header row ``filename,label`` is skipped."""
    labels: dict[str, list[str]] = {}
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if path.suffix == ".csv":
        rows: Iterable[list[str]] = csv.reader(text.splitlines())
    else:
        rows = (line.split("\t", 2) if "\t" in line else line.split(None, 1)  # a spaced label keeps its spaces
                for line in text.splitlines())
    for number, row in enumerate(rows, 1):
        row = [cell.strip() for cell in row]
        if not row or not row[0] or row[0].startswith("#"):
            continue
        if len(row) < 2 or not row[1]:
            raise DataError(f"{path} line {number}: expected 'file name' and 'label'; received {row!r}")
        if number == 1 and row[0].lower() in ("filename", "file", "name", "image"):
            continue
        labels[row[0]] = [cell for cell in row[1:3] if cell]
    return labels


class LabelReader:
    """Finds the label of each image under one data folder (see the module docstring)."""

    def __init__(self, settings: Mapping[str, Any], hook: LabelHook | None = None, by_folder: bool = False) -> None:
        """``by_folder``: a label may be the image's class sub-folder (the mode's
        ``labels_by_folder``; capforge.modes.label_reader passes it)."""
        self.separators: str = settings["LABEL_SEPARATOR"]
        self.case_sensitive: bool = settings["CASE_SENSITIVE"]
        self.by_folder = by_folder
        self.hook = hook
        self._files: dict[Path, dict[str, list[str]]] = {}

    def _label_file(self, folder: Path) -> dict[str, list[str]]:
        if folder not in self._files:
            found = [folder / n for n in LABEL_FILES if (folder / n).is_file()]
            self._files[folder] = read_label_file(found[0]) if found else {}
        return self._files[folder]

    def raw_label(self, path: Path, root: Path) -> str | None:
        """The label as written, before case folding; None when nothing gives one."""
        if self.hook is not None:
            label = self.hook(path)
            if label is not None:
                return str(label)
        listed = self._label_file(path.parent)
        if listed:
            return listed[path.name][0] if path.name in listed else None
        relative = path.relative_to(root)
        if self.by_folder and len(relative.parts) > 1:
            return relative.parts[0]
        return label_from_name(path.name, self.separators)

    def answer(self, path: Path) -> str | None:
        """The answer its folder's labels file gives beside the label (case-folded as labels are), or None."""
        cells = self._label_file(path.parent).get(path.name, [])
        if len(cells) < 2:
            return None
        return cells[1] if self.case_sensitive else cells[1].lower()

    def label(self, path: Path, root: Path) -> str | None:
        """The label used for training: case-folded unless CASE_SENSITIVE."""
        label = self.raw_label(path, root)
        if label is None:
            return None
        return label if self.case_sensitive else label.lower()


def configured_charset(settings: Mapping[str, Any]) -> list[str] | None:
    """The explicit CHARSET as a list of symbols (case-folded as labels are); None if learned."""
    charset = settings["CHARSET"]
    if not charset:
        return None
    symbols = list(charset) if isinstance(charset, str) else list(charset)
    if not settings["CASE_SENSITIVE"]:
        symbols = list(dict.fromkeys(s.lower() for s in symbols))
    return symbols
