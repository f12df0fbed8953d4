"""Generated captchas beside a site's few labelled ones (SYNTHETIC).

With a few hundred labels a text model may learn its training images by heart and never read a
validation one. Captchas that the ``captcha`` package draws in the site's characters, label
lengths and image size make it read. ``pack_dataset.py`` draws as many as the training split
lacks to SYNTHETIC images, once, into data/synthetic/ (again whenever what they are drawn from
changes), and packs them as their own split; ``train.py`` learns them only until the model reads
(capforge.pseudo_labels): learnt all along they cost a site whose model reads already
(figures: bench/results/unlabelled.md). Never in validation or test."""

from __future__ import annotations

import json
import re
import shutil
import statistics
from pathlib import Path
from typing import Any, Mapping, Sequence

from PIL import Image

from capforge.data.generate import CaptchaSpec, font_files, generate
from capforge.data.images import iter_images
from capforge.errors import DataError
from capforge.workspace import Workspace

RECORD = "drawn_from.json"  # in data/synthetic: what its images were drawn from
DRAWN = re.compile(r".+_[0-9a-f]{10}\.\w+")  # the generator's file names (capforge.data.generate.sample_name)
SUM = re.compile(r"\d{1,2}[+\-×÷]\d{1,2}")  # labels like these are drawn as sums, the generator's way


def synthetic_items(workspace: Workspace, settings: Mapping[str, Any], train: Sequence[tuple[Path, str]],
                    progress: bool = True) -> list[tuple[Path, str]]:
    """(path, label) of the generated captchas that top ``train`` up to SYNTHETIC images; none when
    it has that many already, or the mode draws no text (no SYNTHETIC setting)."""
    wanted = settings.get("SYNTHETIC", 0) - len(train)
    if wanted <= 0 or not train:
        return []
    labels = [label for _, label in train]
    sizes = [Image.open(path).size for path, _ in train[:200]]
    fold = not settings["CASE_SENSITIVE"]
    charset = "".join(sorted(set("".join(labels)) - set("/\\\0")))  # what a file name can hold
    drawn = "".join(sorted(set(charset + charset.upper()))) if fold else charset  # sites draw capitals too
    spec = {"charset": drawn, "lengths": [min(map(len, labels)), max(map(len, labels))],
            "size": [int(statistics.median(w for w, _ in sizes)), int(statistics.median(h for _, h in sizes))],
            "count": wanted, "seed": settings["SEED"], "fonts": settings.get("FONT_PATH", ""),
            "sums": all(SUM.fullmatch(label) for label in labels)}
    folder = workspace.synthetic
    if not (folder / RECORD).is_file() or json.loads((folder / RECORD).read_text()) != spec:
        foreign = [p for p in folder.rglob("*") if p.name != RECORD and not DRAWN.fullmatch(p.name)]
        if foreign:  # never delete what capforge did not draw
            raise DataError(f"{workspace.relative(foreign[0])} (and {len(foreign) - 1} more) in data/synthetic/ "
                            "were not drawn by capforge, which redraws that folder: move them (labelled "
                            "images to data/pool/) or set SYNTHETIC = 0")
        shutil.rmtree(folder, ignore_errors=True)
        width, height = (max(16, v) for v in spec["size"])
        generate(CaptchaSpec(drawn, *spec["lengths"], width=width, height=height, expressions=spec["sums"],
                             fonts=font_files(spec["fonts"], drawn)), folder, wanted, settings["SEED"], progress=progress)
        (folder / RECORD).write_text(json.dumps(spec))  # last: a folder without it is drawn again
    return [(path, path.name.rsplit("_", 1)[0].lower() if fold else path.name.rsplit("_", 1)[0])
            for path in iter_images(folder)]
