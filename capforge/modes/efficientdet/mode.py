"""EFFICIENTDET: click captchas. The charset holds the class names; the model gives, per
anchor, a box regression and a sigmoid score per class; decoding keeps boxes above
DETECTION_THRESHOLD after per-class non-max suppression, sorted left to right.

A Prediction's text is the classes of its boxes left to right, its confidence the lowest box
score (0 with no box), so MIN_CONFIDENCE gates detections as it gates text.
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from capforge.data.generate import font_files
from capforge.data.images import Geometry
from capforge.modes.efficientdet.clicks import ClickSpec
from capforge.options import MODEL, SERVE, Option
from capforge.modes.efficientdet.anchors import IGNORED, anchors_for, decode_boxes
from capforge.modes.efficientdet.metrics import Detection, average_precision
from capforge.modes.efficientdet.nms import batched_nms
from capforge.modes.efficientdet.order import detector_scores, order_clicks, prompt_targets, recognizer_scores
from capforge.modes.efficientdet.evaluation import detection_summary, evaluate_detection
from capforge.modes.efficientdet.pipeline import detection_dataset
from capforge.modes.base import Mode, Prediction

FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 1.5
HUBER_DELTA, BOX_WEIGHT = 0.1, 50.0  # as in EfficientDet
MAP_THRESHOLD = 0.05  # scores kept when ranking for mAP (the serving threshold is a setting)
MAX_DETECTIONS = 100
LEGACY_ANCHOR_SCALE = 4.0  # what exports made before the ANCHOR_SCALE setting were trained with


class EfficientDetMode(Mode):
    name = "EFFICIENTDET"
    uses_blank = False
    feature_kind = "detection"
    monitor = "val_map50"
    length_capped = False
    colour_matters = True
    labels_from_boxes = True
    calibrated = False  # box scores are sigmoid per class; no softmax temperature
    takes_prompt = True
    companion = "CLICK_RECOGNIZER"
    # Read from the workspace when serving (not frozen into the export): tuning them needs no retraining.
    serving_settings = ("DETECTION_THRESHOLD", "NMS_IOU", "PROMPT_CLASS")
    options = (
        Option("PHI", 0, int, "size: EfficientNetB<PHI> backbone, BiFPN width and depth", MODEL,
               minimum=0, maximum=7),
        Option("ANCHOR_SCALE", 2.5, float, "anchor size in strides of its feature level (the paper's 4 "
               "suits photos; check_file.py suggests one from your boxes)", MODEL, minimum=0.5, maximum=16.0),
        Option("DETECTION_THRESHOLD", 0.3, float, "boxes scoring below this are not returned", SERVE,
               minimum=0.0, maximum=1.0),
        Option("NMS_IOU", 0.5, float, "boxes of one class overlapping more than this are merged "
               "(non-max suppression)", SERVE, minimum=0.05, maximum=1.0),
        Option("CLICK_RECOGNIZER", "", str, "a NUM_CLASSES or ORDINARY workspace (e.g. 'works/site_chars') "
               "that reads each box for click order, or 'ddddocr' (a pretrained reader, for sites with more "
               "characters than their captchas can teach, e.g. Chinese); '' uses the detector's classes", SERVE),
        Option("PROMPT_CLASS", "", str, "the box class that holds the captcha's own prompt (e.g. 'result' for the "
               "strip 'click 济 拉'): detected like the others, never clicked", SERVE),
    )
    # The whole colour picture at a size its five feature levels divide (multiples of 32), small
    # batches at a higher rate (bench/results/defaults.md, "EFFICIENTDET defaults"), averaged
    # over about the last 500 steps.
    defaults = {"IMAGE_HEIGHT": 128, "IMAGE_WIDTH": 256, "IMAGE_CHANNELS": 3, "BATCH_SIZE": 4,
                "LR": 0.003, "EARLY_PATIENCE": 15, "WEIGHT_AVERAGE": 0.998}

    @classmethod
    def suggest_input(cls, sizes: Sequence[tuple[int, int]], lengths: Mapping[int, int],
                      colourful: bool) -> tuple[dict[str, Any], str]:
        def size(values: list[int]) -> int:
            return int(min(640, max(64, 32 * round(statistics.median(values) / 32))))

        return ({"IMAGE_HEIGHT": size([h for _, h in sizes]), "IMAGE_WIDTH": size([w for w, _ in sizes])},
                "detectors see the whole picture at its median size, in multiples of 32")

    @classmethod
    def sample_spec(cls, settings: Mapping[str, Any], charset: str, lengths: tuple[int, int] | None,
                    width: int | None, height: int | None, image_format: str, source: Path | None = None) -> ClickSpec:
        """Click captchas: 3-5 targets on a 320x160 picture, with VOC XML boxes."""
        low, high = lengths or (3, 5)
        fonts = font_files(settings["FONT_PATH"], charset)  # FONT_PATH's first font, or a CJK one for Chinese
        return ClickSpec(charset, low, high, width or 320, height or 160, font_path=fonts[0] if fonts else "")

    @classmethod
    def settings_problem(cls, values: Mapping[str, Any]) -> str | None:
        for name in ("IMAGE_HEIGHT", "IMAGE_WIDTH"):
            if values[name] % 32 or values[name] < 64:
                return (f"MODE='EFFICIENTDET' needs {name} to be a multiple of 32 of at least 64 (its "
                        f"feature levels halve the image five times); received {values[name]}")
        return None

    @classmethod
    def label_width_for(cls, settings: Mapping[str, Any], labels: Sequence[Any]) -> int:
        return 1  # unused: its labels are box lists

    @classmethod
    def tokens(cls, label: Any) -> list[str]:
        """The classes of an image: its list of box labels (or one class name)."""
        return list(label) if isinstance(label, (list, tuple)) else [label]

    def plausible(self, text: str, lengths: Sequence[int] | None) -> bool:
        return True  # a detection answer is its boxes; with none its confidence is already 0

    def place(self, prediction: Prediction, placed: Geometry) -> Prediction:
        return place_boxes(prediction, placed)

    def evaluate(self, workspace: Any, settings: Mapping[str, Any], predictor: Any, source: str, split: str,
                 progress: bool) -> dict[str, Any]:
        return evaluate_detection(workspace, settings, predictor, source, split, progress)

    @classmethod
    def summary(cls, report: Mapping[str, Any]) -> str:
        return detection_summary(report)

    def clicks(self, image: Any, boxes: list[dict[str, Any]], prompt: str | list[str],
               recognizer: Any = None) -> list[dict[str, Any]]:
        """Each prompted target's box, by the CLICK_RECOGNIZER model's reading of the crops (a
        Predictor) or else the detector's own classes; raises TargetNotFound."""
        boxes = [b for b in boxes if b["label"] != self.settings.get("PROMPT_CLASS", "")]  # the prompt's own strip
        scores = recognizer_scores(image, boxes, recognizer) if recognizer else detector_scores(boxes)
        return order_clicks(prompt_targets(prompt), boxes, scores)

    def dataset(self, records: Any, parse: Callable[[Any], Any], manifest: Mapping[str, Any], split: str,
                augment: bool) -> tuple[Any, int]:
        return detection_dataset(records, parse, manifest, split, self, augment)

    def accepts(self, label: Any) -> bool:
        known = set(self.charset.symbols)
        return all(t in known for t in self.tokens(label))

    @property
    def input_size(self) -> tuple[int, int]:
        return self.settings["IMAGE_HEIGHT"], self.settings["IMAGE_WIDTH"]

    @property
    def anchor_scale(self) -> float:
        return float(self.settings.get("ANCHOR_SCALE", LEGACY_ANCHOR_SCALE))

    def build(self, input_shape: tuple[int, int, int], backbone: Callable[[], Any] | None = None) -> Any:
        """EfficientDet is backbone, neck and heads in one: BACKBONE and models.py do not apply."""
        from capforge.modes.efficientdet.network import build_efficientdet  # lazily: it imports Keras

        return build_efficientdet(input_shape, len(self.charset.symbols), self.settings["PHI"],
                                  self.settings["PRETRAINED"])

    def loss(self) -> Callable[[Any, Any], Any]:
        """Focal loss over every anchor not ignored, Huber loss on positives' boxes; both per
        image and divided by its number of positive anchors."""
        from keras import ops

        classes = len(self.charset.symbols)

        def detection_loss(y_true: Any, y_pred: Any) -> Any:
            state = y_true[..., 4]
            positive = ops.cast(state >= 0, "float32")
            counted = ops.cast(state > IGNORED, "float32")
            probs = ops.clip(y_pred[..., 4:], 1e-6, 1 - 1e-6)
            target = ops.one_hot(ops.cast(ops.maximum(state, 0), "int32"), classes) * positive[..., None]
            pt = target * probs + (1 - target) * (1 - probs)
            alpha = target * FOCAL_ALPHA + (1 - target) * (1 - FOCAL_ALPHA)
            focal = ops.sum(-alpha * (1 - pt) ** FOCAL_GAMMA * ops.log(pt), axis=-1)
            positives = ops.maximum(ops.sum(positive, axis=1), 1.0)
            error = ops.abs(y_pred[..., :4] - y_true[..., :4])
            huber = ops.where(error <= HUBER_DELTA, 0.5 * error ** 2, HUBER_DELTA * error - 0.5 * HUBER_DELTA ** 2)
            box = ops.sum(ops.sum(huber, axis=-1) * positive, axis=1) / (4 * positives)
            return ops.sum(focal * counted, axis=1) / positives + BOX_WEIGHT * box

        return detection_loss

    def detections(self, output: np.ndarray, threshold: float) -> list[Detection]:
        """(label, score, corners in model-input pixels) of one image's output, best first."""
        scores = output[:, 4:]
        best = scores.argmax(axis=1)
        top = scores[np.arange(len(scores)), best]
        keep = np.flatnonzero(top >= threshold)
        if len(keep) > 10 * MAX_DETECTIONS:  # NMS only over the strongest candidates
            keep = keep[np.argsort(-top[keep])[:10 * MAX_DETECTIONS]]
        anchors = anchors_for(*self.input_size, self.anchor_scale)
        boxes = decode_boxes(output[keep, :4].astype(np.float64), anchors[keep])
        chosen = batched_nms(boxes, top[keep], best[keep], self.settings["NMS_IOU"], MAX_DETECTIONS)
        return [(self.charset.symbol(best[keep[i]]), float(top[keep[i]]), tuple(map(float, boxes[i])))
                for i in chosen]

    def decode(self, probs: np.ndarray) -> list[Prediction]:
        """Boxes at DETECTION_THRESHOLD, left to right; weaker ones kept as click candidates."""
        threshold = self.settings["DETECTION_THRESHOLD"]
        out = []
        for output in probs:
            everything = self.detections(output, min(threshold, MAP_THRESHOLD))
            found = sorted((d for d in everything if d[1] >= threshold), key=lambda d: d[2][0])
            out.append(replace(prediction_of(found), candidates=_as_boxes(everything)))
        return out

    def validation_score(self, predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                         labels: Sequence[Any], boxes: Sequence[np.ndarray] = ()) -> float:
        """mAP@0.5 on the packed validation boxes (model-input pixels)."""
        truth = [list(zip(classes, corners)) for classes, corners in zip(labels, boxes)]
        found: list[list[Detection]] = []
        for start in range(0, len(images), 64):
            outputs = predict(images[start:start + 64].astype(np.float32) / 255.0)
            found += [self.detections(o, MAP_THRESHOLD) for o in outputs]
        return average_precision(truth, found, 0.5)["map"]


def _as_boxes(found: Sequence[Detection]) -> list[dict[str, Any]]:
    return [{"label": label, "score": round(score, 6), "x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3]}
            for label, score, box in found]


def prediction_of(found: Sequence[Detection]) -> Prediction:
    """A Prediction from detections sorted left to right."""
    labels = [label for label, _, _ in found]
    joiner = "" if all(len(label) == 1 for label in labels) else " "
    return Prediction(joiner.join(labels), min((s for _, s, _ in found), default=0.0),
                      [(label, score) for label, score, _ in found], boxes=_as_boxes(found))


def _placed(boxes: list[dict[str, Any]] | None, placed: Geometry) -> list[dict[str, Any]]:
    out = []
    for box in boxes or []:
        x1, y1 = placed.to_image(box["x1"], box["y1"])
        x2, y2 = placed.to_image(box["x2"], box["y2"])
        x1, x2 = (round(min(max(v, 0.0), placed.width), 1) for v in (x1, x2))
        y1, y2 = (round(min(max(v, 0.0), placed.height), 1) for v in (y1, y2))
        out.append({**box, "x1": x1, "y1": y1, "x2": x2, "y2": y2})
    return out


def place_boxes(prediction: Prediction, placed: Geometry) -> Prediction:
    """The prediction with its boxes mapped from model input back to the original image."""
    if prediction.boxes is None:
        return prediction
    return replace(prediction, boxes=_placed(prediction.boxes, placed),
                   candidates=_placed(prediction.candidates, placed))
