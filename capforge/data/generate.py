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

import numpy as np
from PIL import Image
from tqdm import tqdm

from capforge.data.images import edge_colour
from capforge.data.numerals import chinese_numeral
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
    expressions: bool = False  # draw sums and products ('12+7') instead of random text (ANSWER = 'arithmetic')
    frames: int = 1  # more than one: an animated GIF that shows the characters across its frames
    fonts: tuple[str, ...] = ()  # font files to draw with; empty: the captcha package's own

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise DataError(f"unknown image format {self.fmt!r}; allowed: {', '.join(FORMATS)}")
        if not self.charset:
            raise DataError("the charset to generate from is empty")
        if not 1 <= self.min_length <= self.max_length <= 64:
            raise DataError(f"label length must satisfy 1 <= min <= max <= 64; received "
                            f"{self.min_length}-{self.max_length}")
        if not 1 <= self.frames <= 32 or self.frames > 1 and self.fmt != "gif":
            raise DataError(f"--frames must be 1 to 32, and more than 1 only with --format gif; received "
                            f"{self.frames} frames as {self.fmt}")
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
    if spec.expressions:
        label = expression(spec.charset, rng)
    else:
        length = rng.randint(spec.min_length, spec.max_length)
        label = "".join(rng.choice(spec.charset) for _ in range(length))
    unique = hashlib.sha1(f"{seed}:{index}".encode()).hexdigest()[:10]
    return label, f"{label}_{unique}.{spec.fmt}"


EXPRESSION_OPERATORS = "+-×÷"
CHINESE_OPERATORS = dict(zip(EXPRESSION_OPERATORS, "加减乘除"))
FONT_SUFFIXES = (".ttf", ".otf", ".ttc")
# Where Debian's CJK fonts live (./run installs fonts-wqy-microhei); the captcha package's font has no CJK.
CJK_FONTS = ("/usr/share/fonts/truetype/wqy/*", "/usr/share/fonts/opentype/noto/*CJK*", "/usr/share/fonts/truetype/arphic/*")


def is_cjk(char: str) -> bool:
    """Whether ``char`` is a CJK ideograph (or CJK punctuation): text the default font cannot draw."""
    return "\u2e80" <= char <= "\u9fff" or "\uf900" <= char <= "\ufaff"


def font_files(font_path: str, charset: str) -> tuple[str, ...]:
    """The fonts to draw ``charset`` with: FONT_PATH (a font file, or a folder of them); where it
    is empty, the captcha package's own fonts, or for CJK characters the CJK fonts installed."""
    if font_path:
        path = Path(font_path).expanduser()
        found = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix.lower() in FONT_SUFFIXES)
        if not found:
            raise DataError(f"FONT_PATH {font_path!r} is neither a font file nor a folder holding fonts "
                            f"({', '.join(FONT_SUFFIXES)})")
        return tuple(str(p) for p in found)
    if not any(is_cjk(c) for c in charset):
        return ()
    found = [p for pattern in CJK_FONTS for p in sorted(Path("/").glob(pattern.lstrip("/")))
             if p.suffix.lower() in FONT_SUFFIXES]
    if not found:
        raise DataError("Chinese (CJK) characters need a CJK font, and none is installed: ./run installs "
                        "fonts-wqy-microhei (apt-get install fonts-wqy-microhei), or set FONT_PATH to your font")
    return tuple(str(p) for p in found)


def named_charset(text: str) -> str:
    """``text`` as a charset: 'hanzi' names the 3,755 common Chinese characters (GB 2312 level 1),
    'hanzi:N' N of them spread evenly over it; any other text is its own characters."""
    name, _, count = text.partition(":")
    if name != "hanzi":
        return text
    common = [bytes([high, low]).decode("gb2312") for high in range(0xB0, 0xD8) for low in range(0xA1, 0xFF)
              if not (high == 0xD7 and low > 0xF9)]
    if not count:
        return "".join(common)
    if not count.isdigit() or not 1 <= int(count) <= len(common):
        raise DataError(f"'hanzi:N' takes N from 1 to {len(common)}; received {text!r}")
    step = len(common) / int(count)
    return "".join(common[int(i * step)] for i in range(int(count)))


def expression(charset: str, rng: random.Random) -> str:
    """An arithmetic captcha's text as sites draw it: two numbers of one or two digits and one
    of the operators in ``charset`` (all of ``+-×÷`` when it has none); no negative results and
    only even divisions, as sites ask for. Where ``charset`` holds Chinese operators (加减乘除),
    numbers and operator are drawn in Chinese (九减四, 十二加八)."""
    chinese = [op for op, word in CHINESE_OPERATORS.items() if word in charset]
    operators = chinese or [c for c in EXPRESSION_OPERATORS if c in charset] or list(EXPRESSION_OPERATORS)
    op = rng.choice(operators)
    a, b = (rng.randint(0, rng.choice((9, 99))) for _ in range(2))
    if op == "-" and a < b:
        a, b = b, a
    if op == "÷":
        b = rng.randint(1, 9)
        a = b * rng.randint(0, 99 // b)
    if chinese:
        return f"{chinese_numeral(a)}{CHINESE_OPERATORS[op]}{chinese_numeral(b)}"
    return f"{a}{op}{b}"


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
    image = captcha.image.ImageCaptcha(spec.width, spec.height, fonts=list(spec.fonts) or None).generate_image(label)
    if spec.frames > 1:
        return animate(image, len(label), spec.frames, random.Random(f"frames:{seed}:{index}"))
    return encode(image, spec.fmt)


def animate(image: Image.Image, characters: int, count: int, rng: random.Random) -> bytes:
    """An animated GIF of ``count`` frames that shows the ``characters`` of ``image`` across its
    frames, as course-selection sites draw them: the first frame holds none (only the
    background), and each character shows in a few of the later frames (one at a time, or
    building up), with specks that move from frame to frame. No single frame shows them all."""
    array = np.asarray(image.convert("RGB"))
    background = edge_colour(array)
    bounds = np.linspace(0, array.shape[1], characters + 1).round().astype(int)  # one band of columns a character
    later = list(range(1, count))
    building = rng.random() < 0.5 and count > 2
    frames = []
    for k in range(count):
        frame = np.empty_like(array)
        frame[:] = background
        for c in range(characters):
            # building up: character c shows from its frame on, but the last frame leaves one out
            shown = (later[c % len(later)] <= k < count - 1 or k == count - 1 and c != characters - 1) \
                if building else k == later[c % len(later)]
            if shown:
                frame[:, bounds[c]:bounds[c + 1]] = array[:, bounds[c]:bounds[c + 1]]
        for _ in range(rng.randint(5, 15)):  # specks, lighter than the text
            y, x = rng.randrange(array.shape[0]), rng.randrange(array.shape[1])
            frame[max(0, y - 1):y + 1, max(0, x - 1):x + 1] = rng.randint(120, 200)
        frames.append(Image.fromarray(frame))
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=200, loop=0, disposal=1)
    return buffer.getvalue()


class Spec(Protocol):
    """Anything that can name and render the files of sample ``index`` for ``seed``. A spec whose
    captchas come with other images (a slider's piece) also has ``parts(seed, index)``: those
    images by name, which the demo route serves beside the captcha."""

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
