"""SLIDER: where the gap is in a slider captcha's background ("drag the piece into the gap").

The label of a captcha is the gap's left edge ``x`` in the image's own pixels
(``<x>_<y>_<anything>.png``, or a labels file). The model reads the background (or a screenshot of
the whole widget) and answers, for every column band of its input, how likely the gap's left
edge lies there and where inside the band: the answer is the likeliest band's position, its
confidence the probability of that band and its neighbours, and other likely bands are ranked
candidates (decoy gaps). Answers are in the image's own pixels; a request that gives the width
the site displays the image at also gets ``display_x``, the distance to drag.

When the request sends the piece too, a training-free matcher (OpenCV: the piece's picture and
outline matched against the background's) answers with the gap's ``x``, ``y`` and width, and the
model's own x stays beside it.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from capforge.data.generate import FORMATS, encode
from capforge.data.pictures import check_source, pick_picture, varied
from capforge.data.records import shifted
from capforge.errors import DataError
from capforge.modes.base import Input, Prediction, round8
from capforge.modes.measured import MeasuredMode, number

STRIDE = 8  # input pixels per column band: the sequence backbones keep W/8 columns (the default charset)
TEXTURE = 4.0  # grey levels of spread inside a piece from which its picture counts fully in a match
NEAR = 1  # bands each side of the likeliest whose probability the confidence adds
SHIFT = 16  # training: input pixels a picture may move each way (its label with it)
APART = 3  # bands between the answer and each other candidate (a gap is wider than that)
STYLES = ("dark", "light", "grey", "outline", "shadow")


def piece_mask(size: int, rng: random.Random) -> Image.Image:
    """An 'L' mask of a puzzle piece ``size`` pixels across: a square body with round tabs on some
    sides (the shape most sites cut), sometimes a plain rounded square or a disc."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    kind = rng.random()
    tab = size // 5
    if kind < 0.15:
        draw.ellipse((0, 0, size - 1, size - 1), fill=255)
        return mask
    body = (tab, tab, size - tab - 1, size - tab - 1)
    draw.rounded_rectangle(body, radius=rng.randint(0, tab // 2), fill=255)
    if kind < 0.25:
        return mask
    middle = size // 2
    for side in rng.sample(("top", "right", "bottom", "left"), rng.randint(1, 3)):
        cx, cy = {"top": (middle, tab), "bottom": (middle, size - tab - 1), "left": (tab, middle),
                  "right": (size - tab - 1, middle)}[side]
        draw.ellipse((cx - tab, cy - tab, cx + tab, cy + tab), fill=255 if rng.random() < 0.75 else 0)
    return mask


def cut_gap(background: Image.Image, mask: Image.Image, x: int, y: int, style: str, strength: float,
            rng: random.Random) -> Image.Image:
    """``background`` with a gap of ``mask``'s shape at (x, y), drawn in ``style`` at ``strength``
    (1: as plain as real sites draw the true gap; less: a fainter decoy)."""
    region = background.crop((x, y, x + mask.width, y + mask.height))
    if style in ("light", "grey"):  # a white veil, or a grey one that also drains the colour
        veil = (255, 255, 255) if style == "light" else (rng.randint(90, 170),) * 3
        changed = Image.blend(region, Image.new("RGB", region.size, veil), rng.uniform(0.35, 0.7) * strength)
    else:
        changed = Image.eval(region, lambda v, k=1 - rng.uniform(0.35, 0.65) * strength: int(v * k))
    if style == "shadow":  # darker towards the top-left edge, as if the hole had depth
        inner = mask.filter(ImageFilter.GaussianBlur(max(1, mask.width // 12)))
        changed = Image.composite(changed, Image.eval(changed, lambda v: int(v * 0.6)), inner)
    out = background.copy()
    out.paste(changed, (x, y), mask)
    if style == "outline" or rng.random() < 0.3:
        edge = ImageChops.subtract(mask.filter(ImageFilter.MaxFilter(3)), mask.filter(ImageFilter.MinFilter(3)))
        colour = (255, 255, 255) if rng.random() < 0.6 else (30, 30, 30)
        out.paste(Image.new("RGB", mask.size, colour), (x, y), edge.point(lambda v: int(v * strength)))
    return out


def render_slider(picture: Image.Image, width: int, height: int, rng: random.Random, style: str | None = None
                  ) -> tuple[Image.Image, Image.Image, int, int]:
    """A slider captcha cut from ``picture``: the background with its gap drawn in ``style`` (one of
    STYLES at random when None; maybe decoys and the piece at the start, as a widget screenshot
    shows), the piece (RGBA), and the gap's x, y."""
    scale = max(width / picture.width, height / picture.height) * rng.uniform(1.0, 1.4)
    picture = picture.resize((max(width, round(picture.width * scale)), max(height, round(picture.height * scale))),
                             Image.BICUBIC)
    left, top = rng.randint(0, picture.width - width), rng.randint(0, picture.height - height)
    clean = picture.crop((left, top, left + width, top + height))
    size = max(16, min(height - 4, round(height * rng.uniform(0.25, 0.4))))
    mask = piece_mask(size, rng)
    x = rng.randint(max(size + 4, width // 4), width - size - 2)
    y = rng.randint(2, height - size - 2)
    style = style or rng.choice(STYLES)
    background = clean
    taken = [(x, x + size)]
    for _ in range(rng.choice((0, 0, 1, 2))):  # decoys: fainter gaps, often of another shape
        dx = rng.randint(size // 2, width - size - 2)
        if any(a - size < dx < b for a, b in taken):
            continue
        taken.append((dx, dx + size))
        decoy = mask.rotate(90 * rng.randint(1, 3)) if rng.random() < 0.5 else piece_mask(size, rng)
        background = cut_gap(background, decoy, dx, rng.randint(2, height - size - 2), rng.choice(STYLES),
                             rng.uniform(0.3, 0.6), rng)
    background = cut_gap(background, mask, x, y, style, 1.0, rng)
    piece = Image.new("RGBA", (size, size))
    piece.paste(clean.crop((x, y, x + size, y + size)), (0, 0), mask)
    if rng.random() < 0.25:  # a screenshot of the whole widget: the piece waits at the start
        background.paste(piece.convert("RGB"), (rng.randint(0, 6), y), mask)
    left, top, _, _ = mask.getbbox()  # the label is the gap's own edge, not its square's
    return background, piece, x + left, y + top


@dataclass(frozen=True)
class SliderSpec:
    """Slider captchas to generate from the pictures of ``source`` (a site's backgrounds; else
    drawn ones): named ``<x>_<y>_<n>``, ``width`` x ``height`` (each varied by up to a fifth when
    ``vary``), gaps in every style, with decoys."""

    width: int = 280
    height: int = 160
    source: Path | None = None
    fmt: str = "png"

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise DataError(f"unknown image format {self.fmt!r}; allowed: {', '.join(FORMATS)}")
        if not (64 <= self.width <= 2048 and 32 <= self.height <= 1024):
            raise DataError(f"slider images must be 64..2048 wide and 32..1024 high; received {self.width}x{self.height}")
        check_source(self.source, "slider backgrounds (pictures without gaps)")

    def _render(self, seed: int, index: int) -> tuple[Image.Image, Image.Image, int, int]:
        rng = random.Random(f"slider-{seed}-{index}")
        picture = varied(pick_picture(self.source, rng, max(self.width, self.height) * 2), rng)
        return render_slider(picture, self.width, self.height, rng)

    def file_names(self, seed: int, index: int) -> list[str]:
        _, _, x, y = self._render(seed, index)
        return [f"{x}_{y}_{seed}-{index:06d}.{self.fmt}"]

    def files(self, seed: int, index: int) -> list[tuple[str, bytes]]:
        background, _, x, y = self._render(seed, index)
        return [(f"{x}_{y}_{seed}-{index:06d}.{self.fmt}", encode(background, self.fmt))]

    def parts(self, seed: int, index: int) -> dict[str, bytes]:
        """The images a site serves beside sample ``index``'s background: its piece (PNG, transparent
        around the shape)."""
        return {"piece": encode(self._render(seed, index)[1], "png")}


def match_piece(background: Image.Image, piece: Image.Image) -> dict[str, float] | None:
    """Training-free: where ``piece`` (RGBA: transparent around its shape) fits ``background``
    (OpenCV template matching). Two cues, added: the piece's picture against the background's
    inside the shape (normalised correlation, which a gap drawn darker, lighter or greyer keeps)
    and the shape's outline against the background's gradient magnitude (every gap's rim is an
    edge, whichever way it steps; no thresholds to miss a faint one). Positions left of the
    piece's own width are never answered: a screenshot shows the piece waiting there. The gap's
    left edge ``x``, top ``y``, its ``width``, the match's ``score``, in the background's
    pixels, and ``piece_left``: the transparent columns left of the shape in the piece's image
    (its image's left edge goes to x - piece_left); None when the piece is larger than the
    background."""
    import cv2  # lazily: only requests that send a piece pay for OpenCV

    rgba = np.asarray(piece.convert("RGBA"))
    margin = 0
    if rgba[..., 3].min() < 128 <= rgba[..., 3].max():  # transparent around the shape: crop to it
        rows, cols = np.nonzero(rgba[..., 3] > 32)
        margin = int(cols.min())
        rgba = rgba[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    shape = (rgba[..., 3] > 32).astype(np.uint8)
    height, width = shape.shape
    picture = np.asarray(background.convert("RGB"))
    if height > picture.shape[0] or 2 * width > picture.shape[1]:
        return None
    # inside the shape, away from the outline sites draw around the gap (the shape fills its box:
    # outside the box is outside the shape, which cv2.erode's default border would not assume)
    side = max(3, min(height, width) // 8) | 1
    inside = cv2.erode(shape, np.ones((side, side), np.uint8), borderType=cv2.BORDER_CONSTANT,
                       borderValue=0).astype(np.float32)
    if inside.sum() < 9:
        inside = shape.astype(np.float32)
    grey = cv2.cvtColor(picture, cv2.COLOR_RGB2GRAY).astype(np.float32)
    # in grey: as right as in colour on held-out captchas, at a third of the time (bench/results/measured.md)
    template = cv2.cvtColor(np.ascontiguousarray(rgba[..., :3]), cv2.COLOR_RGB2GRAY).astype(np.float32)
    content = cv2.matchTemplate(grey, template, cv2.TM_CCOEFF_NORMED, mask=inside)
    content = np.nan_to_num(content, nan=-1.0, posinf=-1.0, neginf=-1.0)  # flat areas say nothing
    # a piece cut from a flat area (sky, a drawn wall) correlates as well with any flat area: its
    # picture counts by how much it varies, down to nothing, and the outline decides
    texture = min(1.0, float(template[inside > 0].std()) / TEXTURE)
    gradient = cv2.magnitude(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    # the rim a pixel either side of the outline: the shape and the gradient padded by one pixel,
    # so that the rim's outer side fits and the map lines up with the content's
    padded = np.pad(shape, 1)
    square = np.ones((3, 3), np.uint8)
    rim = (cv2.dilate(padded, square) - cv2.erode(padded, square)).astype(np.float32)
    edges = np.nan_to_num(cv2.matchTemplate(np.pad(gradient, 1), rim, cv2.TM_CCOEFF_NORMED), nan=-1.0)
    scores = (texture * content + edges) / (1 + texture)
    scores[:, :width] = -1.0
    _, best, _, (x, y) = cv2.minMaxLoc(scores)
    return {"x": float(x), "y": float(y), "width": float(width), "score": round(float(best), 4),
            "piece_left": float(margin)}


class SliderMode(MeasuredMode):
    name = "SLIDER"
    monitor = "val_gap_score"
    # A quarter of the text modes' rate: at 1e-3 and above the band softmax settled on one place for
    # every image (bench/results/measured.md, "The rate").
    defaults = {"IMAGE_HEIGHT": 96, "IMAGE_WIDTH": 256, "IMAGE_CHANNELS": 3, "RESIZE": "stretch",
                "BATCH_SIZE": 32, "LR": 5e-4}
    measure = ("pixels", (2.0, 3.0, 5.0))
    inputs = (
        Input("piece", "image", "the piece that slides into the gap (optional): adds the training-free "
              "matcher's answer, 'match', with the gap's y and width"),
        Input("display_width", "number", "the width the site displays the background at, in its pixels "
              "(optional): adds display_x, the distance to drag"),
    )
    answer_fields = {
        "x": "the gap's left edge, in the image's own pixels (with a piece: the matcher's)",
        "model_x": "with a piece: the trained model's x, beside the matcher's",
        "candidates": "other likely gaps (decoys), best first: x and probability",
        "display_x": "x scaled to the display_width the request gave (the drag distance)",
        "match": "with a piece: the training-free matcher's gap (x, y, width, score) and piece_left (the "
                 "transparent columns left of the shape in the piece's image: that image's left edge goes to "
                 "x - piece_left)",
        "y": "with a piece: the gap's top edge (the matcher's)",
        "width": "with a piece: the gap's width (the piece's)",
    }

    @classmethod
    def symbols_for(cls, settings: Mapping[str, Any], labels: Sequence[str]) -> list[str]:
        """One symbol per column band of the input: what the model's outputs stand for."""
        return [str(i * STRIDE) for i in range(settings["IMAGE_WIDTH"] // STRIDE)]

    @classmethod
    def suggest_input(cls, sizes: Sequence[tuple[int, int]], lengths: Mapping[int, int],
                      colourful: bool) -> tuple[dict[str, Any], str]:
        width = statistics.median(w for w, _ in sizes)
        height = statistics.median(h for _, h in sizes)
        chosen = round8(min(384, max(128, width)), 128, 384)
        tall = round8(min(192, max(64, chosen * height / width)), 64, 192)
        tall = 16 * max(4, round(tall / 16))
        return ({"IMAGE_HEIGHT": tall, "IMAGE_WIDTH": chosen, "IMAGE_CHANNELS": 3, "RESIZE": "stretch"},
                f"slider: the background's median {width:g}x{height:g} at {chosen}x{tall} in colour, one column "
                f"band every {STRIDE} pixels (wider costs training time; answers keep the image's own pixels)")

    @classmethod
    def sample_spec(cls, settings: Mapping[str, Any], charset: str, lengths: tuple[int, int] | None,
                    width: int | None, height: int | None, image_format: str, source: Path | None = None) -> Any:
        return SliderSpec(width or 280, height or 160, source, image_format)

    @classmethod
    def label_problem(cls, label: str, settings: Mapping[str, Any], allowed: set[str] | None,
                      size: tuple[int, int] | None = None) -> tuple[str, str] | None:
        x = number(label)
        limit = size[0] if size else math.inf
        if x is None or not 0 <= x < limit:
            within = f"0 to {limit - 1}, inside the image's width {limit}" if size else "0 or more"
            return "out_of_range", (f"label {label!r} is not the gap's left edge: SLIDER labels are x from {within} "
                                    "('120_45_anything.png': x 120, y 45)")
        return None

    @classmethod
    def packed_label(cls, label: str, placed: Any) -> str:
        x = number(label)
        return label if x is None else f"{placed.to_input(x, 0.0)[0]:.2f}"

    def dataset(self, records: Any, parse: Callable[[Any], Any], manifest: Mapping[str, Any], split: str,
                augment: bool) -> tuple[Any, int] | None:
        """(uint8 image, [x in input pixels]); ``batched`` varies them."""
        import tensorflow as tf

        def example(record: Any) -> tuple[Any, Any]:
            image, label = parse(record)
            return image, tf.strings.to_number(label, tf.float32)[None]

        records, usable = self.learnable(records, parse, manifest["splits"][split]["labels"])
        return records.map(example, num_parallel_calls=tf.data.AUTOTUNE), usable

    def batched(self, images: Any, labels: Any, augment: bool) -> tuple[Any, Any]:
        """Images in [0, 1]. Training varies each one so that the gap is found by its look, not by
        the site's few backgrounds: brightness and contrast; the colours (channels swapped,
        sometimes grey); upside down for half (the gap's x stays); and moved by up to SHIFT input
        pixels each way (the label moving with it)."""
        import tensorflow as tf

        images = tf.cast(images, tf.float32) / 255.0
        if not augment:
            return images, labels
        batch, width, channels = tf.shape(images)[0], images.shape[2], images.shape[3]
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        images = (images - mean) * tf.random.uniform([batch, 1, 1, 1], 0.7, 1.3) + mean
        images = tf.clip_by_value(images + tf.random.uniform([batch, 1, 1, 1], -0.1, 0.1), 0.0, 1.0)
        if channels == 3:  # each image's colours through a random permutation, or to grey
            mixing = tf.one_hot(tf.argsort(tf.random.uniform([batch, 3]), axis=1), 3)
            grey = tf.random.uniform([batch, 1, 1]) < 0.15
            mixing = tf.where(grey, tf.fill([batch, 3, 3], 1.0 / 3), mixing)
            images = tf.einsum("bhwc,bcd->bhwd", images, mixing)
        images = tf.where(tf.random.uniform([batch, 1, 1, 1]) < 0.5, tf.reverse(images, [1]), images)
        down = tf.random.uniform([batch], -(SHIFT // 2), SHIFT // 2 + 1, tf.int32)
        right = tf.random.uniform([batch], -SHIFT, SHIFT + 1, tf.int32)
        images = shifted(images, tf.stack([down, right], 1), SHIFT)
        return images, tf.clip_by_value(labels + tf.cast(right, tf.float32)[:, None], 0.0, width - 1.0)

    def head(self, features: Any) -> Any:
        """Per column band: the gap's left edge is here (a softmax across the bands) and where
        inside it (an offset of -1.5..1.5 bands from the band's centre)."""
        from keras import layers

        _, height, width, channels = features.shape
        x = layers.Conv2D(64, 3, padding="same", activation="relu", name="gap_features")(features)
        x = layers.Reshape((width, height * 64))(layers.Permute((2, 1, 3))(x))
        x = layers.Conv1D(128, 5, padding="same", activation="relu")(x)
        where = layers.Softmax(axis=-1)(layers.Reshape((width,))(layers.Conv1D(1, 1)(x)))
        offset = layers.Rescaling(1.5)(layers.Activation("tanh")(layers.Reshape((width,))(layers.Conv1D(1, 1)(x))))
        return layers.Concatenate(axis=-1, name="probs")([layers.Reshape((width, 1))(where),
                                                          layers.Reshape((width, 1))(offset)])

    def stride(self, bands: int) -> float:
        """Input pixels per column band, for a model that answers over ``bands`` of them."""
        return self.settings["IMAGE_WIDTH"] / bands

    def loss(self) -> Callable[[Any, Any], Any]:
        import keras
        from keras import ops

        def gap_loss(y_true: Any, y_pred: Any) -> Any:
            bands = y_pred.shape[1]
            where, offset = y_pred[..., 0], y_pred[..., 1]
            position = ops.reshape(ops.cast(y_true, "float32"), (-1, 1)) / self.stride(bands)  # in bands
            centres = ops.arange(bands, dtype="float32")[None] + 0.5
            distance = centres - position
            target = ops.exp(-0.5 * (distance / 0.75) ** 2)
            target = target / ops.sum(target, axis=1, keepdims=True)
            placing = keras.losses.categorical_crossentropy(target, where)
            near = ops.cast(ops.abs(distance) < 1.5, "float32")  # offsets learnt where the answer may land
            off = ops.sum(near * ops.abs(offset + distance), axis=1) / ops.maximum(ops.sum(near, axis=1), 1.0)
            return placing + 2.0 * off

        return gap_loss

    def positions(self, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row: the answered x (input pixels), its confidence, and the band probabilities."""
        where, offset = outputs[..., 0], outputs[..., 1]
        best = where.argmax(1)
        bands = where.shape[1]
        x = (best + 0.5 + offset[np.arange(len(best)), best]) * self.stride(bands)
        near = np.clip(best[:, None] + np.arange(-NEAR, NEAR + 1)[None], 0, bands - 1)
        return x, np.clip(np.take_along_axis(where, near, 1).sum(1), 0.0, 1.0), where

    def decode(self, probs: np.ndarray) -> list[Prediction]:
        xs, confidence, where = self.positions(probs)
        out = []
        for x, conf, row, offsets in zip(xs, confidence, where, probs[..., 1]):
            best = int(row.argmax())
            others: list[int] = []
            for band in (int(b) for b in np.argsort(-row)):
                if len(others) == 3:
                    break
                if all(abs(band - taken) > APART for taken in [best, *others]):
                    others.append(band)
            text = f"{x:.0f}"
            out.append(Prediction(text, float(conf), [(text, float(conf))], fields={
                "x": float(x), "candidates": [{"x": float((b + 0.5 + offsets[b]) * self.stride(len(row))),
                                              "probability": round(float(row[b]), 6)} for b in others]}))
        return out

    def place(self, prediction: Prediction, placed: Any) -> Prediction:
        """Positions from the model input back to the image's own pixels."""
        def back(x: float) -> float:
            return round(placed.to_image(x, 0.0)[0], 1)

        fields = dict(prediction.fields)
        fields["x"] = back(fields["x"])
        fields["candidates"] = [{**c, "x": back(c["x"])} for c in fields["candidates"]]
        text = f"{fields['x']:.0f}"
        return Prediction(text, prediction.confidence, [(text, prediction.confidence)], fields=fields)

    def respond(self, prediction: Prediction, image: Any, inputs: Mapping[str, Any]) -> Prediction:
        """With a ``piece``, the matcher's gap is the answer (``x``, ``y``, ``width``; its score the
        confidence): it puts the piece back to the pixel on every background, trained on or not,
        where the model alone misses some (bench/results/measured.md); the model's x stays as
        ``model_x``. With a ``display_width``: the drag distance (display_x) for the answer's x."""
        fields = dict(prediction.fields)
        text, confidence = prediction.text, prediction.confidence
        if "piece" in inputs:
            match = match_piece(image, inputs["piece"])
            if match is not None:
                fields |= {"match": match, "model_x": fields["x"], "x": match["x"], "y": match["y"],
                           "width": match["width"]}
                text, confidence = f"{match['x']:.0f}", min(1.0, max(0.0, match["score"]))
        if "display_width" in inputs:
            fields["display_x"] = round(fields["x"] * inputs["display_width"] / image.width, 1)
        return Prediction(text, confidence, [(text, confidence)], fields=fields)

    def annotations(self, prediction: Prediction, size: tuple[int, int]) -> list[tuple[tuple[int, int, int, int], str]]:
        """The model's x as a band down the image, and the matcher's gap as a box where the piece was sent."""
        x = int(prediction.fields.get("model_x", prediction.fields["x"]))
        marks = [((x, 0, min(size[0] - 1, x + 4), size[1] - 1), f"model: x={x}")]
        if "match" in prediction.fields:
            m = prediction.fields["match"]
            left, top, side = int(m["x"]), int(m["y"]), int(m["width"])
            marks.append(((left, top, left + side, top + side), f"matcher: x={left}"))
        return marks

    def error(self, prediction: Prediction, label: str) -> float | None:
        x = number(label)
        return None if x is None else abs(prediction.fields["x"] - x)

    def validation_score(self, predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                         labels: Sequence[Any], boxes: Sequence[np.ndarray] = ()) -> float:
        """The mean of 1 - error / 32 input pixels (0 beyond): 1 when every gap is found to the pixel."""
        if not len(labels):
            return 0.0
        xs, _, _ = self.positions(self.outputs(predict, images))
        return float(np.mean([max(0.0, 1.0 - abs(x - float(t)) / 32) for x, t in zip(xs, labels)]))
