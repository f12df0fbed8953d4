"""Synthetic click captchas: glyphs at random places, sizes, angles and colours on varied
backgrounds, with decoy marks; each image comes with a VOC XML file of its target boxes.

The font is the ``captcha`` package's bundled DroidSansMono unless FONT_PATH names another
(a CJK font for Chinese click captchas, say). Deterministic for a seed.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from capforge.modes.efficientdet.boxes import Box, voc_xml
from capforge.data.generate import encode
from capforge.errors import DataError


def default_font() -> str:
    import captcha.image

    return captcha.image.DEFAULT_FONTS[0]


@dataclass(frozen=True)
class ClickSpec:
    """Click captchas to generate: symbols to draw, targets per image, size, font."""

    symbols: str
    min_targets: int = 3
    max_targets: int = 5
    width: int = 320
    height: int = 160
    decoys: int = 8
    font_path: str = ""

    def __post_init__(self) -> None:
        if len(set(self.symbols)) < self.max_targets:
            raise DataError(f"click captchas need at least {self.max_targets} distinct symbols to draw "
                            f"{self.max_targets} targets; received {self.symbols!r}")
        if not 1 <= self.min_targets <= self.max_targets <= 12:
            raise DataError(f"targets per image must satisfy 1 <= min <= max <= 12; received "
                            f"{self.min_targets}-{self.max_targets}")
        if self.font_path and not Path(self.font_path).is_file():
            raise DataError(f"FONT_PATH {self.font_path!r} is not a font file")

    def _plan(self, seed: int, index: int) -> tuple[random.Random, str, str]:
        rng = random.Random(f"click:{seed}:{index}")
        count = rng.randint(self.min_targets, self.max_targets)
        targets = "".join(rng.sample(sorted(set(self.symbols)), count))
        unique = hashlib.sha1(f"{seed}:{index}".encode()).hexdigest()[:10]
        return rng, targets, f"{targets}_{unique}"

    def file_names(self, seed: int, index: int) -> list[str]:
        stem = self._plan(seed, index)[2]
        return [f"{stem}.png", f"{stem}.xml"]

    def files(self, seed: int, index: int) -> list[tuple[str, bytes]]:
        rng, targets, stem = self._plan(seed, index)
        image, boxes = render_click(self, targets, rng)
        return [(f"{stem}.png", encode(image, "png")),
                (f"{stem}.xml", voc_xml(f"{stem}.png", self.width, self.height, boxes))]


def _background(width: int, height: int, rng: random.Random) -> Image.Image:
    """A two-colour gradient with speckles."""
    top = [rng.randint(150, 255) for _ in range(3)]
    bottom = [rng.randint(150, 255) for _ in range(3)]
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / max(1, height - 1)
        draw.line([(0, y), (width, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)))
    for _ in range(width * height // 60):
        x, y = rng.randrange(width), rng.randrange(height)
        draw.point((x, y), fill=tuple(rng.randint(120, 255) for _ in range(3)))
    return image


def _overlaps(box: tuple[int, int, int, int], placed: list[tuple[int, int, int, int]]) -> bool:
    x1, y1, x2, y2 = box
    return any(x1 < b[2] and b[0] < x2 and y1 < b[3] and b[1] < y2 for b in placed)


def render_click(spec: ClickSpec, targets: str, rng: random.Random) -> tuple[Image.Image, list[Box]]:
    """One click captcha with ``targets`` drawn once each; returns the image and target boxes."""
    image = _background(spec.width, spec.height, rng)
    draw = ImageDraw.Draw(image)
    for _ in range(spec.decoys):  # decoy marks: lines and arcs the detector must ignore
        points = [(rng.randrange(spec.width), rng.randrange(spec.height)) for _ in range(2)]
        colour = tuple(rng.randint(40, 200) for _ in range(3))
        if rng.random() < 0.5:
            draw.line(points, fill=colour, width=rng.randint(1, 3))
        else:
            (ax, ay), (bx, by) = points
            draw.arc([min(ax, bx), min(ay, by), max(ax, bx) + 10, max(ay, by) + 10],
                     rng.randint(0, 180), rng.randint(180, 360), fill=colour, width=2)
    font_path = spec.font_path or default_font()
    placed: list[tuple[int, int, int, int]] = []
    boxes = []
    for symbol in targets:
        size = rng.randint(spec.height // 5, spec.height // 3)
        font = ImageFont.truetype(font_path, size)
        glyph = Image.new("RGBA", (size * 2, size * 2), (0, 0, 0, 0))
        colour = tuple(rng.randint(0, 140) for _ in range(3)) + (255,)
        ImageDraw.Draw(glyph).text((size // 2, size // 4), symbol, font=font, fill=colour)
        glyph = glyph.rotate(rng.uniform(-35, 35), resample=Image.Resampling.BICUBIC, expand=True)
        bbox = glyph.getbbox()
        if bbox is None:
            raise DataError(f"the font {font_path} draws nothing for {symbol!r}; set FONT_PATH to a font "
                            "that covers your symbols")
        glyph = glyph.crop(bbox)
        for _ in range(200):  # rejection sampling: targets never overlap
            x = rng.randint(2, max(2, spec.width - glyph.width - 2))
            y = rng.randint(2, max(2, spec.height - glyph.height - 2))
            candidate = (x, y, x + glyph.width, y + glyph.height)
            if not _overlaps(candidate, placed):
                break
        placed.append(candidate)
        image.paste(glyph, candidate[:2], glyph)
        boxes.append(Box(symbol, *candidate))
    return image, boxes
