"""Trivially learnable images: digits in a plain font on white, with a little jitter."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from capforge.data.generate import expression


def render(text: str, width: int, height: int, rng: random.Random) -> Image.Image:
    font = ImageFont.load_default(size=int(height * 0.7))
    image = Image.new("L", (width, height), 255)
    ImageDraw.Draw(image).text((3 + rng.randint(0, 5), 2 + rng.randint(0, 3)), text, font=font, fill=0)
    return image


def fill_pool(pool: Path, count: int, lengths: tuple[int, int] = (3, 4), classes_in_folders: bool = False,
              seed: int = 0, width: int = 96, height: int = 32, operators: str = "") -> list[str]:
    """Write ``count`` labelled images; NUM_CLASSES style (one class per folder) if asked; sums
    and differences as the generator draws them ('12+7') where ``operators`` are given."""
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
            render(label, width, height, rng).save(pool / f"{label}_{i}.png")
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
