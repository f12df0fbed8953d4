"""The serving predictor: an exported model answered by onnxruntime, never by eager Keras.

It rebuilds preprocessing and decoding from the export's manifest, not from whatever the
workspace settings say today, so a served model sees exactly what it was trained on.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from capforge.calibration import tempered
from capforge.data.images import Geometry, Preprocessing, preprocess, preprocess_placed
from capforge.errors import WorkspaceError
from capforge.serve.ddddocr_reader import NAME as READER_NAME, DdddocrReader
from capforge.modes import MODE_CLASSES, Mode, Prediction, recorded_mode
from capforge.workspace import Workspace, hook

MANIFEST = "manifest.json"


class Predictor:
    """Load ``export_dir`` (manifest.json + model.onnx) and answer images."""

    temperature = 1.0  # softmax temperature calibrating the confidences (capforge.calibration)

    def __init__(self, export_dir: Path, threads: int | None = None,
                 serving: Mapping[str, Any] | None = None) -> None:
        """``serving``: the workspace's settings, whose serving-time ones (detection thresholds)
        apply over the export's."""
        import onnxruntime as ort

        manifest_path = Path(export_dir) / MANIFEST
        if not manifest_path.is_file():
            raise WorkspaceError(f"no export in {export_dir}: {MANIFEST} is missing; run save_model.py")
        self.describe(json.loads(manifest_path.read_text(encoding="utf-8")))
        if serving is not None:
            self.mode = self.mode.serving(serving)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # Idle threads must not spin: on a small machine they would steal the CPU that decoding,
        # preprocessing and the HTTP server need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(Path(export_dir) / self.manifest["onnx"]), options,
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.extra = hook(Workspace(Path(export_dir)), "utils", "preprocess_image")
        self.temperature = float(self.manifest.get("calibration", {}).get("temperature", 1.0))

    def describe(self, record: dict[str, Any]) -> None:
        """What the model reads, from an export's manifest or a training record (both carry it):
        one home, so a predictor of either kind decodes the same way."""
        self.manifest = record
        self.preprocessing = Preprocessing(**record["preprocessing"])
        self.mode = recorded_mode(record)
        self.label_lengths: list[int] | None = record.get("label_lengths")

    def inputs(self, images: Sequence[Any]) -> np.ndarray:
        """Preprocess images (bytes, paths or PIL images) into one float32 batch."""
        return np.stack([preprocess(image, self.preprocessing, self.extra) for image in images])

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch.astype(np.float32)})[0]

    def placed(self, image: Any) -> tuple[np.ndarray, Geometry]:
        """One preprocessed input and where the image landed in it."""
        return preprocess_placed(image, self.preprocessing, self.extra)

    def decode(self, outputs: np.ndarray) -> list[Prediction]:
        """Answers for a batch of model outputs, confidences calibrated by the export's temperature.
        An answer of a length no training label has is re-read as the mode's likeliest answer of a
        plausible length; one that still cannot be right (empty, or none found) gets 0. The re-read
        searches the model's own outputs: a temperature fitted to greedy answers (down to 0.1)
        would push every other reading below the least probability a re-read may have."""
        return [a if self.mode.plausible(a.text, self.label_lengths) else self.reread(a, row)
                for a, row in zip(self.mode.decode(tempered(outputs, self.temperature)), outputs)]

    def reread(self, answer: Prediction, row: np.ndarray) -> Prediction:
        """An implausible answer as the mode re-reads it, else with confidence 0. An empty answer
        is not re-read: nothing read (a blank image) is no text to repair."""
        better = self.mode.reread(row, self.label_lengths) if answer.text and self.label_lengths else None
        return better or replace(answer, confidence=0.0)

    def answer(self, output: np.ndarray, placed: Geometry) -> Prediction:
        """Decode one model output; detection boxes are given in the original image's pixels."""
        prediction = self.decode(output[None])[0]
        return self.mode.place(prediction, placed)

    def predict(self, images: Sequence[Any]) -> list[Prediction]:
        inputs = [self.placed(image) for image in images]
        outputs = self.probabilities(np.stack([array for array, _ in inputs]))
        return [self.answer(output, placed) for output, (_, placed) in zip(outputs, inputs)]


def companion_of(mode: Mode, settings: Mapping[str, Any], works: Path) -> Predictor | DdddocrReader | None:
    """The reader that ``mode``'s companion setting (a click captcha's CLICK_RECOGNIZER, a grid's
    PROMPT_MODEL) names, or None where it names none: a workspace's export, by a path relative to
    the works folder's parent (``works/site_chars``), to the works folder (``site_chars``) or
    absolute; or 'ddddocr', the pretrained reader of capforge.serve.ddddocr_reader."""
    location = settings.get(mode.companion, "") if mode.companion else ""
    if not location:
        return None
    if location == READER_NAME:  # a pretrained reader, not a workspace
        return DdddocrReader()
    path = Path(location)
    candidates = [path] if path.is_absolute() else [path, works.parent / path, works / path]
    for candidate in candidates:
        if (candidate / "exports" / "current" / MANIFEST).is_file():
            predictor = Predictor(candidate / "exports" / "current")
            if not predictor.mode.reads_crops:
                allowed = " or ".join(name for name, cls in MODE_CLASSES.items() if cls.reads_crops)
                raise WorkspaceError(f"{mode.companion} {location!r} is a {predictor.mode.name} model; "
                                     f"allowed: {allowed}")
            return predictor
    raise WorkspaceError(f"{mode.companion} {location!r} has no export (looked in "
                         + ", ".join(str(c) for c in candidates) + "); run its save_model.py")
