import io

import numpy as np
import pytest
from PIL import Image

from capforge.data.images import Preprocessing, preprocess, preprocess_to_uint8
from capforge.errors import ImageError


def encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def animated_gif() -> bytes:
    frames = [Image.new("P", (90, 30), i * 60) for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buffer.getvalue()


SOURCES = {
    "1-bit": lambda: encoded(Image.new("1", (120, 40), 1)),
    "grey": lambda: encoded(Image.new("L", (120, 40), 128)),
    "palette": lambda: encoded(Image.new("RGB", (120, 40), (10, 200, 30)).convert("P")),
    "rgb": lambda: encoded(Image.new("RGB", (200, 50), (255, 0, 0))),
    "rgba": lambda: encoded(Image.new("RGBA", (120, 40), (0, 0, 0, 0))),
    "grey-alpha": lambda: encoded(Image.new("LA", (120, 40), (0, 255))),
    "16-bit": lambda: encoded(Image.fromarray(np.arange(4800, dtype=np.uint16).reshape(40, 120))),
    "cmyk-jpeg": lambda: encoded(Image.new("CMYK", (120, 40), (0, 255, 255, 0)), "JPEG"),
    "gif": animated_gif,
    "tiny": lambda: encoded(Image.new("RGB", (3, 2), (0, 0, 0))),
    "tall": lambda: encoded(Image.new("RGB", (20, 300), (0, 0, 0))),
}


@pytest.mark.parametrize("name", SOURCES)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("resize", ["pad", "stretch"])
def test_every_image_mode_becomes_the_model_input(name: str, channels: int, resize: str) -> None:
    array = preprocess(SOURCES[name](), Preprocessing(32, 96, channels, resize))
    assert array.shape == (32, 96, channels)
    assert array.dtype == np.float32
    assert 0.0 <= array.min() <= array.max() <= 1.0


def test_transparency_is_flattened_onto_white() -> None:
    array = preprocess(SOURCES["rgba"](), Preprocessing(16, 48, 1))
    assert array.min() == 1.0


def test_pad_keeps_aspect_ratio_and_pads_with_the_background() -> None:
    image = Image.new("L", (100, 50), 255)
    image.paste(0, (40, 10, 60, 40))  # a black bar in a white image
    padded = preprocess_to_uint8(image, Preprocessing(50, 200, 1, "pad"))[:, :, 0]
    stretched = preprocess_to_uint8(image, Preprocessing(50, 200, 1, "stretch"))[:, :, 0]
    assert (padded[:, :50] == 255).all() and (padded[:, 150:] == 255).all()
    assert (padded[25, 95:105] == 0).all()
    assert (stretched[25] == 0).sum() > 30  # the bar widened four times


def test_gif_uses_its_first_frame() -> None:
    array = preprocess_to_uint8(animated_gif(), Preprocessing(30, 90, 1, "stretch"))
    assert (array == array[0, 0]).all()


@pytest.mark.parametrize("data, message", [
    (b"", "0 bytes"),
    (b"hello, I am text", "not an image"),
    (encoded(Image.new("RGB", (100, 100), (1, 2, 3)))[:60], "corrupt or truncated"),
])
def test_bad_bytes_raise_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        preprocess(data, Preprocessing(32, 96))


def test_hook_runs_before_resizing() -> None:
    image = Image.new("L", (96, 32), 0)
    array = preprocess(image, Preprocessing(32, 96), extra=lambda im: im.point(lambda v: 255))
    assert array.min() == 1.0
