"""The Mode contract: one class per recognition mode owns every decision that depends on the
mode (its defaults and setting checks, how labels split into symbols and which it accepts, the
suggested input, its records pipeline, network, loss, decoding, evaluation, calibration, serving
settings and placing answers on the image). Code outside capforge/modes/ asks the mode; adding a
mode is one module and one entry in the registry (capforge/modes/__init__.py).

Decoding is NumPy only, so the server can decode without TensorFlow; building heads and losses
imports Keras lazily.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from capforge.data.charset import Charset
from capforge.data.generate import CaptchaSpec, font_files
from capforge.data.labels import configured_charset
from capforge.modes.answer_rules import Rule, rule_of
from capforge.options import DATA, TRAIN, Option

# Text modes: generated captchas that warm a model of few labels up (capforge.synthetic).
SYNTHETIC = Option("SYNTHETIC", 0, int, "while the training split has fewer images, pack_dataset.py draws captchas "
                   "in the site's characters, label lengths and size up to this many (data/synthetic/; 0: none); "
                   "train.py learns them until the model reads validation images: few labels alone are learnt by "
                   "heart", DATA, minimum=0, maximum=1_000_000)
# Text modes' first pseudo-labels (capforge.pseudo_labels): a pretrained reader's confident answers.
TEACHER = Option("PSEUDO_TEACHER", "none", str, "with images in data/unlabelled: 'ddddocr' lets its pretrained "
                 "reader give the first pseudo-labels (those it answers as confidently as PSEUDO_PRECISION "
                 "of its validation answers are right), before the model's own are good enough", TRAIN,
                 choices=("none", "ddddocr"))


@dataclass
class Prediction:
    """One decoded answer: the text, a confidence in [0, 1], and per-symbol confidences."""

    text: str
    confidence: float
    chars: list[tuple[str, float]] = field(default_factory=list)
    top: list[tuple[str, float]] = field(default_factory=list)
    boxes: list[dict[str, Any]] | None = None  # detection: label, score and corners per box
    # detection: weaker boxes too (down to MAP_THRESHOLD), for click prompts; never sent as such
    candidates: list[dict[str, Any]] | None = None
    # the answer fields the mode adds (declared in its ``answer_fields``): a slider's x, an angle
    fields: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "result": self.text,
            "confidence": round(self.confidence, 6),
            "chars": [{"char": c, "confidence": round(p, 6)} for c, p in self.chars],
        }
        if self.top:
            out["top"] = [{"label": c, "confidence": round(p, 6)} for c, p in self.top]
        if self.boxes is not None:
            out["boxes"] = self.boxes
        return out | self.fields


@dataclass(frozen=True)
class Input:
    """A request input a mode reads beside the image: a JSON or form field of the API, a
    keyword of ``Recognizer.recognize`` and a control on the page. ``kind``: 'image' (base64 in
    JSON, a file on the page), 'number' or 'text'."""

    name: str
    kind: str
    help: str


TEXT_HEIGHT = 48  # the text backbones divide the height by 16: 48 leaves 3 rows of features
COLUMNS_PER_SYMBOL = (32, 48)  # input columns per character of the longest label: 4 to 6 CTC steps


def round8(value: float, low: int, high: int) -> int:
    """``value`` to a multiple of 8 within ``low``-``high`` (input sizes the backbones divide)."""
    return int(min(high, max(low, 8 * round(value / 8))))


def accepted(confidence: float, minimum: float) -> bool:
    """Whether an answer is good enough to use: an answer that cannot be right carries
    confidence 0 (see ``Mode.plausible``) and is never accepted, whatever MIN_CONFIDENCE is."""
    return confidence > 0 and confidence >= minimum


class Mode:
    """Base class; subclasses set ``name`` and implement the methods below."""

    name = ""
    uses_blank = True
    # Backbone features for text read along the width ("sequence"), for the whole image
    # ("global"), or for whole-image classes ("classes": global, from a wider small CNN).
    feature_kind = "sequence"
    # What checkpoints, early stopping and the curves follow, computed on the whole validation set.
    monitor = "val_seq_acc"
    # Whether CAPTCHA_LENGTH caps its labels (one output per position); CTC reads any length.
    length_capped = True
    # Whether colour can carry the answer (photos, tiles), so check_file.py suggests colour input.
    colour_matters = False
    # Settings whose default differs under this mode (the global table holds the rest).
    defaults: Mapping[str, Any] = {}
    # Settings only this mode reads: the settings table gathers them (capforge.settings.table),
    # a new workspace's settings.py lists them, and setting one under another MODE is an error.
    options: tuple[Option, ...] = ()
    # Whether training learns from data/unlabelled too (pseudo-labels: capforge.pseudo_labels).
    learns_unlabelled = False
    # Whether labels may come from the image's class sub-folder (one class per folder).
    labels_by_folder = False
    # Whether labels are box files beside the images (VOC / YOLO) rather than text.
    labels_from_boxes = False
    # Whether export fits a softmax temperature that calibrates the answers' confidences.
    calibrated = True
    # Whether answers can be clicks ordered by a prompt (click captchas).
    takes_prompt = False
    # Whether a click-captcha model may use this mode's export to read its crops (CLICK_RECOGNIZER).
    reads_crops = False
    # Whether a request's image is answered by ``answer_image`` (cut into parts the model reads), not read whole.
    cuts_image = False
    # The setting that names another workspace whose export this mode's answers also read (a
    # click captcha's CLICK_RECOGNIZER, a grid's PROMPT_MODEL); the server loads it beside the model.
    companion: str | None = None
    # Settings read from the workspace when serving, not frozen into the export.
    serving_settings: tuple[str, ...] = ()
    # The fields this mode adds to every answer (name -> what it means), which ``decode`` (or
    # ``respond``) puts in Prediction.fields: the API documents them, Recognizer and the page show them.
    answer_fields: Mapping[str, str] = {}
    # What a request may send beside the image (a slider's piece, the displayed width), read by ``respond``.
    inputs: tuple[Input, ...] = ()
    # A mode whose answers are measured, not right or wrong (an angle, a position): the unit of
    # ``error`` and the tolerances its test report gives the share within; None: text answers.
    measure: tuple[str, tuple[float, ...]] | None = None

    def __init__(self, charset: Charset, settings: Mapping[str, Any], label_width: int) -> None:
        self.charset = charset
        self.settings = settings
        self.label_width = label_width
        # what the site gets for a reading (ANSWER, of the modes that read text): the one answer builder applies it
        self.rule: Rule = rule_of(settings)

    @classmethod
    def label_width_for(cls, settings: Mapping[str, Any], labels: Sequence[str]) -> int:
        """Padded label length the model is built for: CAPTCHA_LENGTH when capped, else the
        longest of ``labels``."""
        if cls.length_capped:
            return settings["CAPTCHA_LENGTH"]
        return max([len(cls.tokens(label)) for label in labels] + [1])

    @classmethod
    def tokens(cls, label: str) -> list[str]:
        """The symbols of a label, which the model outputs one by one: its characters."""
        return list(label)

    @classmethod
    def symbols_for(cls, settings: Mapping[str, Any], labels: Sequence[str]) -> list[str]:
        """The charset's symbols (or class names) a model is built for: CHARSET where set, else
        every symbol of the training ``labels``."""
        return configured_charset(settings) or sorted({t for label in labels for t in cls.tokens(label)})

    @classmethod
    def suggest_input(cls, sizes: Sequence[tuple[int, int]], lengths: Mapping[int, int],
                      colourful: bool) -> tuple[dict[str, Any], str]:
        """Input settings for images of these (width, height) ``sizes`` and label ``lengths``
        (length -> count), with one line of reasoning.

        Text is read along the width: the height is the backbone's (TEXT_HEIGHT), and the width
        gives each character of the longest label 32-48 columns (4-6 CTC steps), following the
        images' aspect ratio inside that band: enough time steps, none paid for empty. Text is
        stretched to that width when padding would leave a fifth of it empty or shrink it."""
        aspect = statistics.median(w / h for w, h in sizes)
        longest = max(lengths) if lengths else 4
        low, high = (c * longest for c in COLUMNS_PER_SYMBOL)
        width = round8(min(high, max(low, TEXT_HEIGHT * aspect)), 32, 2048)
        stretch = not 0.8 <= width / (TEXT_HEIGHT * aspect) <= 1.25
        out: dict[str, Any] = {"IMAGE_HEIGHT": TEXT_HEIGHT, "IMAGE_WIDTH": width}
        if stretch:
            out["RESIZE"] = "stretch"
        reason = (f"text: height {TEXT_HEIGHT} suits the backbone (it divides by 16); width {width} gives the "
                  f"longest label ({longest}) {width // longest} columns a character ({low}-{high} wanted; the "
                  f"images' aspect alone would give {TEXT_HEIGHT * aspect:.0f})"
                  + ("; stretched to fill it, since padding would shrink the text or leave columns empty"
                     if stretch else ""))
        return out, reason

    @classmethod
    def suggest_training(cls, symbols: int) -> tuple[dict[str, Any], str]:
        """Training settings for a charset of ``symbols`` symbols, with one line of reasoning
        (none unless a mode measured a reason)."""
        return {}, ""

    @classmethod
    def sample_spec(cls, settings: Mapping[str, Any], charset: str, lengths: tuple[int, int] | None,
                    width: int | None, height: int | None, image_format: str, source: Path | None = None) -> Any:
        """What gen_sample_by_captcha.py draws for this mode (``None``: its defaults): text
        captchas of CAPTCHA_LENGTH characters, 160x60. ``source``: a folder of pictures to build
        captchas from (modes that cut or turn pictures)."""
        low, high = lengths or (settings["CAPTCHA_LENGTH"],) * 2
        return CaptchaSpec(charset, low, high, width or 160, height or 60, image_format,
                           expressions=rule_of(settings).draws_expressions,
                           fonts=font_files(settings["FONT_PATH"], charset))

    @classmethod
    def settings_problem(cls, values: Mapping[str, Any]) -> str | None:
        """Why these settings cannot work with this mode, or None (checked when settings load)."""
        return None

    @classmethod
    def label_problem(cls, label: str, settings: Mapping[str, Any], allowed: set[str] | None,
                      size: tuple[int, int] | None = None) -> tuple[str, str] | None:
        """Why the check step flags ``label`` of an image of ``size`` (a kind of capforge.check.KINDS
        and a detail), or None: symbols outside ``allowed`` (the configured CHARSET, if any), or
        longer than CAPTCHA_LENGTH where this mode has a maximum."""
        symbols = cls.tokens(label)
        unknown = sorted({s for s in symbols if allowed is not None and s not in allowed})
        if unknown:
            return "unknown_symbols", f"label {label!r} has {unknown}"
        if cls.length_capped and len(symbols) > settings["CAPTCHA_LENGTH"]:
            return "too_long", (f"label {label!r} has {len(symbols)} > CAPTCHA_LENGTH={settings['CAPTCHA_LENGTH']}; "
                                f"CAPTCHA_LENGTH = {len(symbols)} or more fits it")
        rule = rule_of(settings)
        if rule.answer_of(label) is None:
            return "not_answerable", f"label {label!r} is not what ANSWER = {rule.name!r} reads ({rule.reads})"
        return None

    @classmethod
    def packed_label(cls, label: str, placed: Any) -> str:
        """``label`` as the model learns it, for an image that lands in the model input as
        ``placed`` says (a data.images.Geometry): a position moves with the image; text as it is."""
        return label

    def accepts(self, label: str) -> bool:
        """Whether this mode can learn ``label`` (known symbols, not too long)."""
        tokens = self.tokens(label)
        known = set(self.charset.symbols)
        return 0 < len(tokens) <= self.label_width and all(t in known for t in tokens)

    def plausible(self, text: str, lengths: Sequence[int] | None) -> bool:
        """Whether an answer could be right: not empty, and as long as some training label
        (``lengths``: the shortest and longest, from the export manifest)."""
        count = len(self.tokens(text)) if text else 0
        return count > 0 and (not lengths or lengths[0] <= count <= lengths[1])

    def reread(self, row: np.ndarray, lengths: Sequence[int]) -> Prediction | None:
        """For one output whose best answer is not ``plausible``: the likeliest answer that is,
        or None. Only a mode whose outputs spell texts of any length (CTC) has one to offer."""
        return None

    def serving(self, settings: Mapping[str, Any]) -> "Mode":
        """This mode with the workspace's ``serving_settings`` applied over the export's."""
        if not self.serving_settings:
            return self
        changed = {**self.settings, **{name: settings[name] for name in self.serving_settings}}
        return type(self)(self.charset, changed, self.label_width)

    def served(self, model: Any) -> Any:
        """The trained Keras ``model`` as export and test.py answer with it: by default itself."""
        return model

    def respond(self, prediction: Prediction, image: Any, inputs: Mapping[str, Any]) -> Prediction:
        """``prediction`` for a request that sent ``inputs`` (this mode's ``inputs``, parsed: PIL
        images, floats, strings) with the PIL ``image``; by default unchanged."""
        return prediction

    def annotations(self, prediction: Prediction, size: tuple[int, int]) -> list[tuple[tuple[int, int, int, int], str]] | None:
        """Boxes the page draws on the image (``size``: width, height) for this answer ((x1, y1, x2,
        y2), caption); None: none."""
        if prediction.boxes is None:
            return None
        return [((int(b["x1"]), int(b["y1"]), int(b["x2"]), int(b["y2"])), f"{b['label']} {b['score']:.2f}")
                for b in prediction.boxes]

    def place(self, prediction: Prediction, placed: Any) -> Prediction:
        """``prediction`` placed back on the original image (``placed``: a data.images.Geometry);
        text answers have nothing to place."""
        return prediction

    def tf_tokens(self, labels: Any) -> Any:
        """The symbols of a batch of label strings, as a tf.RaggedTensor [batch, (symbols)]: each
        label's characters (what ``tokens`` does, inside tf.data)."""
        import tensorflow as tf  # lazily: the server decodes without TensorFlow

        return tf.strings.unicode_split(labels, "UTF-8")

    def dataset(self, records: Any, parse: Callable[[Any], Any], manifest: Mapping[str, Any], split: str,
                augment: bool) -> tuple[Any, int] | None:
        """This mode's own tf.data pipeline over the serialized ``records`` of ``split``, unbatched,
        with its example count; None: the shared one (image, padded label ids) of data.records."""
        return None

    def batched(self, images: Any, labels: Any, augment: bool) -> tuple[Any, Any]:
        """A batch of this mode's own pipeline (``dataset``) as the model learns from it: work done
        on whole batches, not per image, which on two cores keeps the input pipeline from costing
        as much as the training step (augmentation when ``augment``, targets); by default unchanged."""
        return images, labels

    def blend(self, images: Any, ids: Any) -> tuple[Any, Any]:
        """Training batches of photos mixed with each other, and their targets (PHOTO_AUGMENT);
        by default unchanged: a text's symbols cannot be blended."""
        return images, ids

    def answer_image(self, image: Any, predict: Callable[[list[Any]], list[Prediction]], companion: Any = None,
                     prompt: Any = None) -> Prediction:
        """The answer to a whole request ``image`` (PIL) of a mode that ``cuts_image``: its parts read
        through ``predict`` (the model's answers to a list of images), ``companion`` (the export its
        ``companion`` setting names, or None) and the crawler's ``prompt``."""
        raise NotImplementedError(f"{self.name} reads a request's image whole")

    def whole_report(self, workspace: Any, settings: Mapping[str, Any], predictor: Any,
                     companion: Any = None) -> dict[str, Any] | None:
        """Figures test.py adds to the shared report, measured on whole captchas (a grid's); None: none."""
        return None

    def evaluate(self, workspace: Any, settings: Mapping[str, Any], predictor: Any, source: str, split: str,
                 progress: bool) -> dict[str, Any] | None:
        """This mode's own test step over ``split`` through ``predictor`` (its report, written);
        None: the shared one of capforge.evaluate (sequence and character accuracy)."""
        return None

    @classmethod
    def summary(cls, report: Mapping[str, Any]) -> str:
        """A readable summary of this mode's test report: by default the text modes' (sequence
        and character accuracy, confusions, calibration); a mode with its own report overrides it."""
        lines = [
            f"model: {report['model']}",
            f"{report['split']}: {report['images']} images"
            + (f" ({len(report['skipped'])} skipped: unreadable or unlabelled)" if report["skipped"] else ""),
            f"sequence accuracy  {report['sequence_accuracy']:.4f}",
            *([f"answers right      {report['answer_accuracy']:.4f} (ANSWER = {report['rule']!r}: the result the site "
               "wants, from the reading)"] if report.get("rule", "text") != "text" else []),
            f"character accuracy {report['character_accuracy']:.4f}   CER {report['cer']:.4f}",
            "by length: " + ", ".join(f"{k}: {v['accuracy']:.3f} (n={v['count']})"
                                      for k, v in report["accuracy_by_length"].items()),
        ]
        if report["confusions"]:
            lines.append("most confused (true->predicted): " + ", ".join(
                f"{c['true']}->{c['predicted']} x{c['count']}" for c in report["confusions"][:8]))
        lines.append("confidence   count  accuracy  (mean confidence)")
        for row in report["calibration"]:
            if row["count"]:
                lines.append(f"{row['from']:.1f}-{row['to']:.1f}   {row['count']:>6}  {row['accuracy']:.3f}     "
                             f"({row['mean_confidence']:.3f})")
        lines.append(f"calibration error {report['calibration_error']:.3f} (mean gap between confidence and accuracy)"
                     + (f"; temperature {report['temperature']:g}, fitted on validation at export"
                        if report["temperature"] != 1.0 else ""))
        lines.append(f"{report['ms_per_image']:.2f} ms per image (batches of 64, preprocessing included)")
        split = report["split"]
        lines.append(f"report: {report['report_path']}; pictures: reports/{split}_worst.png (wrong answers), "
                     f"{split}_confusions.png, {split}_reliability.png")
        return "\n".join(lines)

    def build(self, input_shape: tuple[int, int, int], backbone: Callable[[], Any]) -> Any:
        """The keras.Model: the network ``backbone()`` gives (images -> features), then the head."""
        import keras  # lazily: the server decodes without TensorFlow

        inputs = keras.Input(input_shape, name="image")
        return keras.Model(inputs, self.head(backbone()(inputs)), name=f"capforge_{self.name.lower()}")

    def clicks(self, image: Any, boxes: list[dict[str, Any]], prompt: str | list[str],
               recognizer: Any = None) -> list[dict[str, Any]]:
        """Click points for ``prompt`` in its order among ``boxes`` (modes that ``takes_prompt``)."""
        raise NotImplementedError(f"{self.name} answers no click prompts")

    def head(self, features: Any) -> Any:
        """Keras layers from backbone features to output probabilities."""
        raise NotImplementedError

    def loss(self) -> Callable[[Any, Any], Any]:
        """Keras loss taking padded label ids [batch, label_width] and the probabilities."""
        raise NotImplementedError

    def decode(self, probs: np.ndarray) -> list[Prediction]:
        """Predictions for a batch of model outputs."""
        raise NotImplementedError

    def error(self, prediction: Prediction, label: str) -> float | None:
        """How far a measured answer is from ``label``, in the unit of ``measure``; None for
        text answers (right or wrong) or a label that names no measure."""
        return None

    @staticmethod
    def outputs(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch: int = 256) -> np.ndarray:
        """``predict``'s outputs for uint8 ``images``, fed in batches of ``batch`` as floats in [0, 1]."""
        return np.concatenate([predict(images[start:start + batch].astype(np.float32) / 255.0)
                               for start in range(0, len(images), batch)])

    def validation_score(self, predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                         labels: Sequence[Any], boxes: Sequence[np.ndarray] = ()) -> float:
        """Share of uint8 ``images`` whose decoded text equals the label exactly."""
        if not len(labels):
            return 0.0
        return sum(p.text == t for p, t in zip(self.decode(self.outputs(predict, images)), labels)) / len(labels)
