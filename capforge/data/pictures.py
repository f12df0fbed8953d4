"""Pictures that rotate and slider captchas are made of: the user's own (a folder), or drawn from
nothing when none are given (tests, the demo), each with a clear up and down and enough texture
for a gap to be cut into."""

from __future__ import annotations

import functools
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from capforge.data.images import iter_images, open_image
from capforge.errors import DataError


@functools.lru_cache(maxsize=8)
def _pictures(folder: Path) -> tuple[Path, ...]:
    return tuple(sorted(iter_images(folder)))


def check_source(folder: Path | None, what: str) -> None:
    """Refuse a ``--source`` folder that holds no pictures, naming what it should hold."""
    if folder is not None and not _pictures(Path(folder)):
        raise DataError(f"--source {folder} holds no pictures: give a folder of {what}")


def pick_picture(folder: Path | None, rng: random.Random, size: int) -> Image.Image:
    """A picture from ``folder`` chosen by ``rng``, else one drawn (``size`` pixels square), in RGB."""
    if folder is None:
        return scene(size, rng)
    pictures = _pictures(Path(folder))
    return open_image(pictures[rng.randrange(len(pictures))]).convert("RGB")


def varied(picture: Image.Image, rng: random.Random) -> Image.Image:
    """``picture`` as another of a site's backgrounds might look: maybe mirrored, its brightness,
    contrast and saturation each changed by up to 30 %. A site reuses a few dozen backgrounds;
    the model must find gaps in pictures it never saw (bench/results/measured.md)."""
    if rng.random() < 0.5:
        picture = ImageOps.mirror(picture)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        picture = enhance(picture).enhance(rng.uniform(0.7, 1.3))
    return picture


def scene(size: int, rng: random.Random) -> Image.Image:
    """An upright picture drawn from nothing: sky above textured ground, a sun, trees and houses
    standing on the ground, a line of text; each with a clear up and down."""
    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    horizon = int(size * rng.uniform(0.45, 0.7))
    sky, ground = [rng.randrange(256) for _ in range(3)], [rng.randrange(256) for _ in range(3)]
    for y in range(size):
        t = y / size
        base = sky if y < horizon else ground
        shade = (1.0 - 0.5 * t) if y < horizon else (0.6 + 0.4 * t)
        draw.line([(0, y), (size, y)], fill=tuple(int(min(255, c * shade + 40 * (y < horizon))) for c in base))
    for _ in range(size * 2):  # texture: speckles of the ground's colour, larger nearer the bottom
        x, y = rng.randrange(size), rng.randint(horizon, size - 1)
        spot = 1 + 4 * (y - horizon) // max(1, size - horizon)
        draw.ellipse((x, y, x + spot + 1, y + spot), fill=tuple(max(0, min(255, c + rng.randint(-50, 50)))
                                                                 for c in ground))
    r = rng.randint(size // 16, size // 8)
    cx, cy = rng.randint(r, size - r), rng.randint(r, max(r + 1, horizon // 2))
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(250, 230, rng.randint(60, 160)))
    for _ in range(rng.randint(2, 6)):
        x, w = rng.randint(0, size), rng.randint(size // 20, size // 8)
        h = rng.randint(size // 8, size // 3)
        if rng.random() < 0.5:  # a tree: trunk, then a crown on top
            draw.rectangle((x - w // 4, horizon - h // 2, x + w // 4, horizon + 2), fill=(90, 60, 30))
            draw.ellipse((x - w, horizon - h, x + w, horizon - h // 3), fill=(30, rng.randint(100, 180), 40))
        else:  # a house: walls, then a roof on top
            colour = tuple(rng.randrange(256) for _ in range(3))
            draw.rectangle((x - w, horizon - h // 2, x + w, horizon + 2), fill=colour)
            draw.polygon([(x - w - 3, horizon - h // 2), (x, horizon - h), (x + w + 3, horizon - h // 2)],
                         fill=(150, 40, 30))
    draw.text((rng.randint(0, size // 2), rng.randint(horizon + 4, size - 12)), "capforge", fill=(255, 255, 255))
    return image
