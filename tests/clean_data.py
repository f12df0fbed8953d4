"""Trivially learnable images: digits in a plain font on white, with a little jitter."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from capforge.data.generate import expression


def render(text: str, width: int, height: int, rng: random.Random, sizes: tuple[float, float] = (0.7, 0.7)) -> Image.Image:
    """``text`` in a font ``sizes`` of the height high (drawn at random between the two)."""
    size = sizes[0] if sizes[0] == sizes[1] else rng.uniform(*sizes)
    font = ImageFont.load_default(size=int(height * size))
    image = Image.new("L", (width, height), 255)
    left = 3 + rng.randint(0, 5)  # drawn before the top: the same images as ever for a seed
    top = 2 + rng.randint(0, 3) if size <= 0.7 else rng.randint(0, max(0, int(height * (1 - size))))
    ImageDraw.Draw(image).text((left, top), text, font=font, fill=0)
    return image


def fill_pool(pool: Path, count: int, lengths: tuple[int, int] = (3, 4), classes_in_folders: bool = False,
              seed: int = 0, width: int = 96, height: int = 32, operators: str = "",
              sizes: tuple[float, float] = (0.7, 0.7), named: bool = True) -> list[str]:
    """Write ``count`` labelled images (in ``sizes``, see ``render``); NUM_CLASSES style (one class
    per folder) if asked; sums and differences as the generator draws them ('12+7') where
    ``operators`` are given; named ``capture<i>.png``, their labels only returned, unless ``named``."""
    pool.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    labels = []
    for i in range(count):
        label = expression(operators, rng) if operators else \
            "".join(rng.choice("0123456789") for _ in range(rng.randint(*lengths)))
        labels.append(label)
        if classes_in_folders:
            folder = pool / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            render(label * 3, width, height, rng).save(folder / f"img{i}.png")
        else:
            render(label, width, height, rng, sizes).save(pool / (f"{label}_{i}.png" if named else f"capture{i:05d}.png"))
    return labels


PHOTO_CLASSES = {"red_disc": ((200, 40, 40), "disc"), "red_box": ((200, 40, 40), "box"),
                 "blue_disc": ((40, 60, 200), "disc"), "blue_box": ((40, 60, 200), "box")}


def fill_photo_pool(pool: Path, count: int, size: int = 32, seed: int = 0) -> None:
    """Write ``count`` colour "photos" into one folder per class: a red or blue disc or box,
    placed and sized at random on a noisy background (each class looks the same mirrored)."""
    rng = random.Random(seed)
    names = sorted(PHOTO_CLASSES)
    for i in range(count):
        name = names[i % len(names)]
        colour, shape = PHOTO_CLASSES[name]
        image = Image.new("RGB", (size, size), tuple(rng.randint(150, 255) for _ in range(3)))
        radius = rng.randint(size // 5, size // 3)
        cx, cy = (rng.randint(radius, size - radius) for _ in range(2))
        draw = ImageDraw.Draw(image)
        (draw.ellipse if shape == "disc" else draw.rectangle)((cx - radius, cy - radius, cx + radius, cy + radius),
                                                               fill=colour)
        (pool / name).mkdir(parents=True, exist_ok=True)
        image.save(pool / name / f"photo{i}.png")
