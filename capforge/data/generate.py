"""Synthetic text captchas from the ``captcha`` package, deterministic for a seed.

Files are named ``<label>_<unique>.<ext>``; image ``i`` of seed ``s`` is always the same bytes
under the same name, whatever the number of worker processes.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from PIL import Image
from tqdm import tqdm

from capforge.errors import DataError

FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "gif": "GIF", "bmp": "BMP", "webp": "WEBP"}


class _SeededSecrets(random.Random):
    """Stands in for the ``secrets`` module inside ``captcha.image`` so output is reproducible.

    captcha 0.7 draws all its randomness from ``secrets`` (unseedable); it only calls
    ``randbelow``, ``randbits`` and ``choice``, which a seeded ``random.Random`` provides.
    """

    def randbelow(self, n: int) -> int:
        return self.randrange(n)

    def randbits(self, k: int) -> int:
        return self.getrandbits(k)


@dataclass(frozen=True)
class CaptchaSpec:
    """Text captchas to generate: image size, format, label lengths and alphabet."""

    charset: str
    min_length: int
    max_length: int
    width: int = 160
    height: int = 60
    fmt: str = "png"

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise DataError(f"unknown image format {self.fmt!r}; allowed: {', '.join(FORMATS)}")
        if not self.charset:
            raise DataError("the charset to generate from is empty")
        if not 1 <= self.min_length <= self.max_length <= 64:
            raise DataError(f"label length must satisfy 1 <= min <= max <= 64; received "
                            f"{self.min_length}-{self.max_length}")
        if not (16 <= self.width <= 2048 and 16 <= self.height <= 1024):
            raise DataError(f"image size must be 16..2048 wide and 16..1024 high; received "
                            f"{self.width}x{self.height}")

    def file_names(self, seed: int, index: int) -> list[str]:
        return [sample_name(self, seed, index)[1]]

    def files(self, seed: int, index: int) -> list[tuple[str, bytes]]:
        """(name, bytes) of every file of sample ``index``."""
        label, name = sample_name(self, seed, index)
        return [(name, render(self, label, seed, index))]


def parse_length(text: str) -> tuple[int, int]:
    """``'4'`` -> (4, 4); ``'4-6'`` -> (4, 6)."""
    low, _, high = text.partition("-")
    try:
        lo, hi = int(low), int(high or low)
    except ValueError:
        raise DataError(f"--length must be N or MIN-MAX, e.g. 4 or 4-6; received {text!r}") from None
    return lo, hi


def sample_name(spec: CaptchaSpec, seed: int, index: int) -> tuple[str, str]:
    """The label and file name of sample ``index`` for ``seed``."""
    rng = random.Random(f"label:{seed}:{index}")
    length = rng.randint(spec.min_length, spec.max_length)
    label = "".join(rng.choice(spec.charset) for _ in range(length))
    unique = hashlib.sha1(f"{seed}:{index}".encode()).hexdigest()[:10]
    return label, f"{label}_{unique}.{spec.fmt}"


def encode(image: Image.Image, fmt: str) -> bytes:
    """Encoded image bytes: fast PNG compression, high JPEG quality."""
    buffer = io.BytesIO()
    pil_format = FORMATS[fmt]
    options = {"compress_level": 1} if pil_format == "PNG" else {"quality": 95} if pil_format == "JPEG" else {}
    image.save(buffer, pil_format, **options)
    return buffer.getvalue()


def render(spec: CaptchaSpec, label: str, seed: int, index: int) -> bytes:
    """Encoded image bytes of one captcha."""
    import captcha.image

    captcha.image.secrets = _SeededSecrets(f"image:{seed}:{index}")  # type: ignore[attr-defined]
    return encode(captcha.image.ImageCaptcha(spec.width, spec.height).generate_image(label), spec.fmt)


class Spec(Protocol):
    """Anything that can name and render the files of sample ``index`` for ``seed``."""

    def file_names(self, seed: int, index: int) -> list[str]: ...

    def files(self, seed: int, index: int) -> list[tuple[str, bytes]]: ...


def _write_chunk(args: tuple[Spec, Path, int, list[int]]) -> int:
    spec, out_dir, seed, indices = args
    for index in indices:
        for name, data in spec.files(seed, index):
            partial = out_dir / f".{name}.part"
            partial.write_bytes(data)
            os.replace(partial, out_dir / name)  # complete files only, even if interrupted
    return len(indices)


def generate(spec: Spec, out_dir: Path, count: int, seed: int,
             workers: int | None = None, progress: bool = True) -> list[Path]:
    """Write ``count`` samples into ``out_dir``; refuse before writing if a name is taken.

    Returns the first file of each sample (the image).
    """
    if count < 1:
        raise DataError(f"--count must be at least 1; received {count}")
    out_dir.mkdir(parents=True, exist_ok=True)
    per_sample = [spec.file_names(seed, i) for i in range(count)]
    names = [name for sample in per_sample for name in sample]
    taken = [n for n in names if (out_dir / n).exists()]
    if taken:
        raise DataError(f"{len(taken)} of the files to write already exist in {out_dir} "
                        f"(e.g. {taken[0]}): this seed was used before; pass another --seed")
    if len(set(names)) != len(names):
        raise DataError("generated file names collide; pass another --seed")
    workers = max(1, min(workers or os.cpu_count() or 1, count // 50 or 1))
    chunk = max(1, min(500, count // (workers * 4) or 1))
    jobs = [(spec, out_dir, seed, list(range(i, min(i + chunk, count))))
            for i in range(0, count, chunk)]
    bar = tqdm(total=count, unit="img", desc="generating", disable=not progress)
    if workers == 1:
        for job in jobs:
            bar.update(_write_chunk(job))
    else:
        with ProcessPoolExecutor(workers) as pool:
            for done in pool.map(_write_chunk, jobs):
                bar.update(done)
    bar.close()
    return [out_dir / sample[0] for sample in per_sample]
