"""THE preprocessing: any image in, the model's input out.

Packing, training, testing and serving all call :func:`preprocess`, with the parameters of a
:class:`Preprocessing` that is saved into every export's manifest, so a served model sees
exactly what it was trained on. Only Pillow and NumPy are needed (the server has no TensorFlow).

>>> from PIL import Image
>>> p = Preprocessing(height=32, width=96, channels=1, resize="pad")
>>> preprocess(Image.new("1", (200, 50)), p).shape
(32, 96, 1)
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from capforge.errors import ImageError, ImageTooLargeError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"})


def iter_images(root: Path) -> Iterator[Path]:
    """Every image file under ``root``, sorted, skipping hidden files and folders."""
    if not root.is_dir():
        return
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            yield path


# A decompression bomb guard: refuse images above this many pixels before decoding them.
MAX_PIXELS = 40_000_000


@dataclass(frozen=True)
class Preprocessing:
    """Everything that shapes the model input; written into the export manifest."""

    height: int
    width: int
    channels: int = 1
    resize: str = "pad"
    frames: str = "first"  # how an animation's frames become one image (FRAMES, see merge_frames)
    frame_index: int = 0  # the frame FRAMES = 'frame' reads

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> "Preprocessing":
        return cls(settings["IMAGE_HEIGHT"], settings["IMAGE_WIDTH"], settings["IMAGE_CHANNELS"], settings["RESIZE"],
                   settings.get("FRAMES", "first"), settings.get("FRAME_INDEX", 0))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def open(self, source: bytes | str | Path | Image.Image) -> Image.Image:
        """``source`` decoded as the model reads it: an animation's frames merged as FRAMES says."""
        return open_image(source, self.frames, self.frame_index)


def image_suffix(data: bytes) -> str:
    """The file suffix for an image's bytes, from its header (``.png`` when Pillow cannot tell)."""
    try:
        kind = (Image.open(io.BytesIO(data)).format or "png").lower()
    except (OSError, ValueError, SyntaxError):
        kind = "png"
    suffix = {"jpeg": ".jpg", "tiff": ".tif"}.get(kind, f".{kind}")
    return suffix if suffix in IMAGE_SUFFIXES else ".png"


# Frames read at most from one animation: a captcha's characters show within its first seconds.
MAX_FRAMES = 64
# FRAMES: how an animation (GIF, APNG, WebP) becomes one image; a still image is itself under each.
FRAME_MERGES = ("first", "last", "frame", "darkest", "lightest", "median")


def merge_frames(frames: list[Image.Image], how: str, index: int = 0) -> Image.Image:
    """One image from an animation's ``frames``: the first, the last, frame ``index`` ('frame';
    the last where there are fewer), or per pixel across all frames the darkest, the lightest or
    the median (characters drawn in different frames, noise that moves)."""
    if how not in FRAME_MERGES:
        raise ValueError(f"FRAMES must be one of {', '.join(FRAME_MERGES)}; received {how!r}")
    if len(frames) == 1 or how == "first":
        return frames[0]
    if how in ("last", "frame"):
        return frames[-1 if how == "last" else min(index, len(frames) - 1)]
    stack = np.stack([np.asarray(to_rgb_or_grey(frame, 3)) for frame in frames])
    merged = {"darkest": np.min, "lightest": np.max, "median": np.median}[how](stack, axis=0)
    return Image.fromarray(merged.astype(np.uint8), "RGB")


def open_image(source: bytes | str | Path | Image.Image, frames: str = "first", index: int = 0) -> Image.Image:
    """Open and fully decode an image; of an animation, the image ``frames`` makes of its frames
    (see merge_frames; by default the first frame). Raise ImageError if bad."""
    if isinstance(source, Image.Image):
        return source
    return merge_frames(open_frames(source, 1 if frames == "first" else MAX_FRAMES), frames, index)


def open_frames(source: bytes | str | Path, limit: int = MAX_FRAMES) -> list[Image.Image]:
    """Every frame of an image (one for a still image), at most ``limit``, fully decoded; raise
    ImageError, saying why, for an empty, unreadable, corrupt or too large one."""
    name = "image bytes" if isinstance(source, bytes) else str(source)
    try:
        if isinstance(source, bytes):
            if not source:
                raise ImageError("received 0 bytes; expected an image file (PNG, JPEG, GIF, BMP, WebP)")
            image = Image.open(io.BytesIO(source))
        else:
            if Path(source).stat().st_size == 0:
                raise ImageError(f"{name}: the file is empty (0 bytes)")
            image = Image.open(source)
        if image.width * image.height > MAX_PIXELS:
            raise ImageTooLargeError(f"{name}: {image.width}x{image.height} pixels is over the limit of "
                                     f"{MAX_PIXELS} pixels")
        read = []
        for frame in ImageSequence.Iterator(image):
            frame.load()
            read.append(frame if limit == 1 else frame.copy())  # the iterator reuses one object
            if len(read) == limit:
                break
        return read
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image Pillow can read "
                         "(allowed: PNG, JPEG, GIF, BMP, WebP, TIFF)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{name}: corrupt or truncated image ({exc})") from None


def to_rgb_or_grey(image: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode to 'L' or 'RGB'; transparency is flattened onto white."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    elif image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        array = np.asarray(image, dtype=np.float64)
        span = float(array.max() - array.min()) or 1.0
        image = Image.fromarray(((array - array.min()) * (255.0 / span)).astype(np.uint8), "L")
    return image.convert("L" if channels == 1 else "RGB")


def edge_colour(array: np.ndarray) -> np.ndarray:
    """Median colour of the border pixels: the padding that looks most like background."""
    edges = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]], axis=0)
    return np.median(edges, axis=0).astype(np.uint8)


@dataclass(frozen=True)
class Geometry:
    """Where a ``width`` x ``height`` image lands in the model input: scale and offset per axis.

    >>> g = geometry(200, 50, Preprocessing(32, 96))
    >>> g.to_image(*g.to_input(100.0, 25.0))
    (100.0, 25.0)
    """

    width: int
    height: int
    scale_x: float
    scale_y: float
    left: int
    top: int

    def to_input(self, x: float, y: float) -> tuple[float, float]:
        return x * self.scale_x + self.left, y * self.scale_y + self.top

    def to_image(self, x: float, y: float) -> tuple[float, float]:
        return (x - self.left) / self.scale_x, (y - self.top) / self.scale_y


def geometry(width: int, height: int, p: Preprocessing) -> Geometry:
    """The placement :func:`fit` gives a ``width`` x ``height`` image."""
    if p.resize == "stretch" or (width, height) == (p.width, p.height):
        return Geometry(width, height, p.width / width, p.height / height, 0, 0)
    scale = min(p.width / width, p.height / height)
    new_w = max(1, min(p.width, round(width * scale)))
    new_h = max(1, min(p.height, round(height * scale)))
    return Geometry(width, height, new_w / width, new_h / height, (p.width - new_w) // 2,
                    (p.height - new_h) // 2)


def fit(image: Image.Image, height: int, width: int, resize: str) -> Image.Image:
    """Resize to exactly ``height`` x ``width``: stretch, or keep the aspect ratio and pad."""
    g = geometry(image.width, image.height, Preprocessing(height, width, 1, resize))
    if g.left == g.top == 0:
        return image.resize((width, height), Image.Resampling.BILINEAR)
    new_w, new_h = round(image.width * g.scale_x), round(image.height * g.scale_y)
    scaled = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    array = np.asarray(scaled)
    if array.ndim == 2:
        array = array[:, :, None]
    canvas = np.empty((height, width, array.shape[2]), dtype=np.uint8)
    canvas[:] = edge_colour(array)
    canvas[g.top:g.top + new_h, g.left:g.left + new_w] = array
    return Image.fromarray(canvas[:, :, 0] if image.mode == "L" else canvas, image.mode)


ImageHook = Callable[[Image.Image], Image.Image]


def preprocess_to_uint8(source: bytes | str | Path | Image.Image, p: Preprocessing,
                        extra: ImageHook | None = None) -> np.ndarray:
    """The model input as uint8 ``[height, width, channels]`` (what TFRecords store).

    ``extra`` is the workspace's ``utils.preprocess_image`` hook, run on the decoded image.
    """
    image = p.open(source)
    if extra is not None:
        image = extra(image)
    image = fit(to_rgb_or_grey(image, p.channels), p.height, p.width, p.resize)
    array = np.asarray(image, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def preprocess(source: bytes | str | Path | Image.Image, p: Preprocessing,
               extra: ImageHook | None = None) -> np.ndarray:
    """The model input as float32 ``[height, width, channels]`` with values in [0, 1]."""
    return preprocess_to_uint8(source, p, extra).astype(np.float32) / 255.0


def preprocess_placed(source: bytes | str | Path | Image.Image, p: Preprocessing,
                      extra: ImageHook | None = None) -> tuple[np.ndarray, Geometry]:
    """:func:`preprocess` plus where the image landed (detection maps boxes back with it)."""
    image = p.open(source)
    if extra is not None:
        image = extra(image)
    return preprocess(image, p), geometry(image.width, image.height, p)
