"""The Mode contract, checked for every registered mode (and every registered backbone): the
registries drive these tests, so a new mode or backbone is tested the day it is added."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from capforge.cli import invoke
from capforge.data.charset import Charset
from capforge.errors import SettingsError
from capforge.models.backbones import BACKBONES, build_backbone
from capforge.modes import MODE_CLASSES, make_mode
from capforge.modes.ctc import CTCMode
from capforge.options import SERVE, Option
from capforge.recognizer import Recognizer
from capforge.serve.api import create_app
from capforge.serve.registry import ModelRegistry
from capforge.serve.ui import build_ui
from capforge.settings import load_settings
from capforge.workspace import create_workspace

# Tiny inputs each mode accepts (a detector needs multiples of 32 of at least 64).
SIZES = {"IMAGE_HEIGHT": 64, "IMAGE_WIDTH": 128}
SYMBOLS = list("0123456789")


def small_mode(name: str, label_width: int = 4):
    cls = MODE_CLASSES[name]
    settings = load_settings(None, [f"MODE={name}", *(f"{k}={v}" for k, v in SIZES.items())])
    symbols = ["12", "34", "56"] if cls.tokens("12") == ["12"] else SYMBOLS
    return make_mode(name, Charset(symbols, 0 if cls.uses_blank else None), settings, label_width)


@pytest.mark.parametrize("name", list(MODE_CLASSES))
def test_model_loss_and_decoding(name: str) -> None:
    import keras

    mode = small_mode(name)
    shape = (SIZES["IMAGE_HEIGHT"], SIZES["IMAGE_WIDTH"], mode.settings["IMAGE_CHANNELS"])
    model = mode.build(shape, lambda: build_backbone("tiny_cnn", shape, mode.feature_kind))
    images = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
    outputs = model(images, training=False)
    target = np.zeros((2, *outputs.shape[1:]), np.float32) if mode.labels_from_boxes else \
        np.array([[1, 2, 0, 0], [3, 0, 0, 0]], np.int32)[:, :mode.label_width]
    if mode.measure:  # measured answers: the targets its own pipeline makes of two labels
        target = own_targets(mode, images, MEASURED_LABELS)
    loss = keras.ops.convert_to_numpy(keras.ops.mean(mode.loss()(target, outputs)))
    assert np.isfinite(loss), loss
    predictions = mode.decode(np.asarray(outputs))
    assert len(predictions) == 2 and all(0.0 <= p.confidence <= 1.0 for p in predictions)


MEASURED_LABELS = ["30", "100"]  # an angle or a position every measured mode accepts at the tiny size


def own_targets(mode, images: np.ndarray, labels: list[str]) -> np.ndarray:
    """The targets ``mode``'s own pipeline (Mode.dataset, then Mode.batched) makes of ``labels`` for ``images``."""
    import tensorflow as tf

    records = tf.data.Dataset.range(len(labels))
    uint8 = tf.constant((images * 255).astype(np.uint8))
    manifest = {"splits": {"train": {"labels": labels}},
                "preprocessing": {"height": images.shape[1], "width": images.shape[2]}}
    ds, count = mode.dataset(records, lambda i: (uint8[i], tf.constant(labels)[i]), manifest, "train", False)
    assert count == len(labels)
    _, targets = mode.batched(*next(iter(ds.batch(len(labels)))), False)
    return targets.numpy()


@pytest.mark.parametrize("name", list(MODE_CLASSES))
def test_label_acceptance_agrees_with_symbol_splitting(name: str) -> None:
    mode = small_mode(name, label_width=2)
    if mode.measure:  # an angle or a position: in range or reported with what is allowed
        assert all(mode.accepts(label) for label in MEASURED_LABELS) and not mode.accepts("never-a-number?")
        assert mode.label_problem("30", mode.settings, None, (128, 64)) is None
        problem = mode.label_problem("-5", mode.settings, None, (128, 64))
        assert problem and problem[0] == "out_of_range" and "'-5'" in problem[1] and "from 0" in problem[1]
        return
    known = mode.charset.symbols[0]
    assert mode.tokens(known) and mode.accepts(known)
    assert not mode.accepts("never-a-symbol?")
    if mode.length_capped:
        long = known * 3  # three symbols in a mode that keeps at most two
        assert len(mode.tokens(long)) == 3 and not mode.accepts(long)
        problem = mode.label_problem(long, {"CAPTCHA_LENGTH": 2}, set(mode.charset.symbols))
        assert problem and problem[0] == "too_long" and "CAPTCHA_LENGTH" in problem[1]


@pytest.mark.parametrize("name", list(MODE_CLASSES))
def test_settings_check_names_the_setting(name: str) -> None:
    defaults = load_settings(None, [f"MODE={name}"])  # a mode's own defaults are valid
    assert MODE_CLASSES[name].settings_problem(defaults) is None
    problem = MODE_CLASSES[name].settings_problem({**defaults, "IMAGE_HEIGHT": 33})
    assert problem is None or "IMAGE_HEIGHT" in problem and "33" in problem
    if problem:
        with pytest.raises(SettingsError, match="IMAGE_HEIGHT"):
            load_settings(None, [f"MODE={name}", "IMAGE_HEIGHT=33"])


@pytest.mark.parametrize("name", list(MODE_CLASSES))
def test_generated_labels_survive_pack_and_the_pipeline(name: str, tmp_path: Path) -> None:
    from capforge.data.records import load_arrays, make_dataset
    from capforge.train import prepare

    ws = create_workspace(tmp_path / "works", "site", name)
    with (ws.root / "settings.py").open("a") as f:
        f.write("".join(f"{k} = {v}\n" for k, v in SIZES.items()) + "CAPTCHA_LENGTH = 2\n"
                "VALIDATION_SPLIT = 0.25\nTEST_SPLIT = 0.0\n")
    gen = ["--count", "12", "--length", "2", "--charset", "0123456789", "--seed", "1"]
    for step, argv in (("gen", gen), ("split", []), ("pack", [])):
        assert invoke(step, ws.root, argv) == 0, step
    setup = prepare(ws, load_settings(ws.root))
    images, labels, _ = load_arrays(ws, setup.manifest, "train", setup.mode)
    assert sorted(map(str, labels)) == sorted(map(str, setup.manifest["splits"]["train"]["labels"]))
    assert images.shape[1:3] == (SIZES["IMAGE_HEIGHT"], SIZES["IMAGE_WIDTH"])
    batch_images, _ = next(iter(make_dataset(ws, setup.manifest, "train", setup.mode, 4, False)))
    assert batch_images.shape[0] == 4 and float(batch_images.numpy().max()) <= 1.0


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_trains_a_step_and_exports_with_parity(name: str, tmp_path: Path) -> None:
    import keras
    import onnxruntime as ort

    from capforge.onnx_export import export_onnx

    mode = make_mode("CTC", Charset(list("0123")), load_settings(None, ["MODE=CTC"]), 2)
    shape = (32, 96, 1)
    model = mode.build(shape, lambda: build_backbone(name, shape, mode.feature_kind))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=mode.loss())
    rng = np.random.default_rng(1)
    images = rng.random((4, *shape), dtype=np.float32)
    loss = model.train_on_batch(images, np.array([[1, 2], [3, 0], [4, 4], [2, 0]], np.int32))
    assert np.isfinite(loss)
    export_onnx(model, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: images})[0]
    assert np.abs(got - np.asarray(model(images, training=False))).max() < 1e-3


class ToyMode(CTCMode):
    """A mode defined outside the package: CTC with a single dense layer for a head, its own
    setting, and its own answer field."""

    name = "TOY"
    length_capped = True
    options = CTCMode.options + (Option("TOY_SHOUT", False, bool, "also answer in capitals", SERVE),)
    answer_fields = {"shout": "the answer in capitals where TOY_SHOUT is set"}

    def decode(self, probs):
        predictions = super().decode(probs)
        for p in predictions:
            p.fields["shout"] = p.text.upper() + "!" if self.settings["TOY_SHOUT"] else p.text
        return predictions

    def head(self, features):
        from keras import layers

        return layers.Dense(self.charset.size, activation="softmax", name="probs")(self.sequence(features))


def test_a_new_mode_is_one_class_and_one_registry_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from clean_data import fill_pool

    monkeypatch.setitem(MODE_CLASSES, "TOY", ToyMode)  # the one registry line
    assert load_settings(None, ["MODE=TOY"]).MODE == "TOY"
    with pytest.raises(SettingsError, match="TOY_SHOUT is a setting of TOY"):
        load_settings(None, ["MODE=CTC", "TOY_SHOUT=True"])
    ws = create_workspace(tmp_path / "works", "toy", "TOY")
    assert "# TOY_SHOUT = False  # also answer in capitals" in (ws.root / "settings.py").read_text()
    with (ws.root / "settings.py").open("a") as f:
        f.write("IMAGE_HEIGHT = 32\nIMAGE_WIDTH = 96\nCHARSET = '0123456789'\nEPOCHS = 1\nBATCH_SIZE = 16\n"
                "TOY_SHOUT = True\n")
    fill_pool(ws.pool, 60, lengths=(2, 4))
    for step in ("check", "split", "pack", "train", "export", "test"):
        assert invoke(step, ws.root, []) == 0, step
    manifest = json.loads((ws.exports / "current" / "manifest.json").read_text())
    report = json.loads((ws.root / "reports" / "test_report.json").read_text())
    assert manifest["mode"] == "TOY" and report["mode"] == "TOY" and report["images"] == 6

    # its answer field reaches Recognizer, the HTTP answer (and its documentation) and the page
    image = next((ws.root / "data" / "test").iterdir()).read_bytes()
    answer = Recognizer(ws.root).recognize(image)
    assert answer["shout"] == answer["result"].upper() + "!"
    registry = ModelRegistry(ws.root.parent, None)
    api = TestClient(create_app(registry))
    served = api.post("/api/v1/recognize", json={"image": base64.b64encode(image).decode()}).json()
    assert served["shout"] == answer["result"].upper() + "!"
    documented = api.get("/openapi.json").json()["components"]["schemas"]["RecognizeAnswer"]["properties"]
    assert "TOY:" in documented["shout"]["description"]
    page = build_ui(registry)
    handler = next(f.fn for f in page.fns.values() if getattr(f.fn, "__name__", "") == "answer")
    *_, whole = handler("toy", Image.open(io.BytesIO(image)))
    assert whole["shout"] == answer["result"].upper() + "!" and whole["model"] == "toy"
