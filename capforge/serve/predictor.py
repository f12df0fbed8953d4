"""The serving predictor: an exported model answered by onnxruntime, never by eager Keras.

It rebuilds preprocessing and decoding from the export's manifest, not from whatever the
workspace settings say today, so a served model sees exactly what it was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from capforge.data.charset import Charset
from capforge.data.images import Preprocessing, preprocess
from capforge.errors import WorkspaceError
from capforge.modes import Prediction, make_mode
from capforge.workspace import Workspace, hook

MANIFEST = "manifest.json"


class Predictor:
    """Load ``export_dir`` (manifest.json + model.onnx) and answer images."""

    def __init__(self, export_dir: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        manifest_path = Path(export_dir) / MANIFEST
        if not manifest_path.is_file():
            raise WorkspaceError(f"no export in {export_dir}: {MANIFEST} is missing; run save_model.py")
        self.manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
        self.preprocessing = Preprocessing(**self.manifest["preprocessing"])
        charset = Charset.from_dict(self.manifest["charset"])
        self.mode = make_mode(self.manifest["mode"], charset, self.manifest["settings"],
                              self.manifest["label_width"])
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

    def inputs(self, images: Sequence[Any]) -> np.ndarray:
        """Preprocess images (bytes, paths or PIL images) into one float32 batch."""
        return np.stack([preprocess(image, self.preprocessing, self.extra) for image in images])

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch.astype(np.float32)})[0]

    def predict(self, images: Sequence[Any]) -> list[Prediction]:
        return self.mode.decode(self.probabilities(self.inputs(images)))
