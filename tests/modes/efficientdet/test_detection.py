"""EFFICIENTDET: anchors, NMS, mAP, click order, and the acceptance run from scaffold to an
HTTP answer with boxes and clicks."""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from capforge.modes.efficientdet.anchors import (anchors_for, best_anchor_scale, decode_boxes, encode_boxes, iou_matrix,
                                       target_encoder)
from capforge.modes.efficientdet.metrics import average_precision, coco_map, precision_recall
from capforge.modes.efficientdet.nms import batched_nms, nms
from capforge.modes.efficientdet.order import TargetNotFound, order_clicks, prompt_targets, recognizer_scores
from capforge.serve.api import ServeOptions, create_app
from capforge.serve.predictor import Predictor
from capforge.serve.registry import ModelRegistry

from conftest import new_work, run_script, running_app

COLOURS = ("blue", "green", "red")


def test_anchor_coding_round_trip_and_targets() -> None:
    anchors = anchors_for(128, 256, 4.0)
    boxes = np.array([[10.0, 20.0, 42.0, 50.0], [100.0, 30.0, 160.0, 100.0]])
    picked = anchors[[5, 4000]]
    assert np.allclose(decode_boxes(encode_boxes(boxes, picked), picked), boxes)
    targets = target_encoder(128, 256, 4.0)(boxes.astype(np.float32), np.array([2, 7])).numpy()
    positive = targets[:, 4] >= 0
    assert set(targets[positive, 4]) == {2.0, 7.0}
    decoded = decode_boxes(targets[positive, :4], anchors[positive])
    assert all(np.allclose(d, boxes[0 if c == 2 else 1], atol=1e-3) for d, c in zip(decoded, targets[positive, 4]))
    # tiny objects still get their best anchor; an image without objects is all background
    tiny = target_encoder(128, 256, 4.0)(np.array([[5.0, 5.0, 9.0, 9.0]], np.float32), np.array([0])).numpy()
    assert (tiny[:, 4] == 0).sum() == 1
    empty = target_encoder(128, 256, 4.0)(np.zeros((0, 4), np.float32), np.zeros(0, np.int64)).numpy()
    assert (empty[:, 4] == -1).all()


def test_anchor_scale_is_fitted_to_the_boxes() -> None:
    """20 px glyphs in a 128x256 input have no anchor at IoU 0.5 under the paper's scale 4
    (32 px and up); the fitted scale gives nearly all of them one, and big boxes keep a big scale."""
    corners = np.random.default_rng(1).uniform((0, 0), (230, 100), (200, 2))
    glyphs = np.concatenate([corners, corners + 20.0], axis=1)

    def matched(boxes: np.ndarray, scale: float) -> float:
        return float((iou_matrix(boxes, anchors_for(128, 256, scale)) >= 0.5).any(axis=1).mean())

    scale = best_anchor_scale(glyphs, 128, 256)
    assert scale < 3.0 and matched(glyphs, scale) > 0.9 and matched(glyphs, 4.0) < 0.1
    big = np.concatenate([corners / 4, corners / 4 + 90.0], axis=1)
    assert best_anchor_scale(big, 128, 256) >= 4.0 and matched(big, best_anchor_scale(big, 128, 256)) > 0.9


def test_nms_on_hand_built_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 9], [30, 30, 40, 40]], float)
    scores = np.array([0.6, 0.9, 0.5, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [1, 3]
    assert nms(boxes, scores, 0.5, limit=1).tolist() == [1]
    # the same boxes as different classes do not suppress each other
    assert sorted(batched_nms(boxes, scores, np.array([0, 1, 0, 0]), 0.5).tolist()) == [0, 1, 3]


def test_map_matches_hand_computed_cases() -> None:
    truth = [[("a", (0, 0, 10, 10)), ("a", (20, 0, 30, 10))]]
    found = [[("a", 0.9, (0, 0, 10, 10)), ("a", 0.8, (50, 50, 60, 60)), ("a", 0.7, (20, 0, 30, 10))]]
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1: 51 recall points at 1, 50 at 2/3
    assert average_precision(truth, found, 0.5)["map"] == pytest.approx((51 + 50 * 2 / 3) / 101)
    # a box shifted by 3 px has IoU 0.538: a hit at 0.5; from 0.55 on the ranking is miss, hit
    # (precision 0, then 1/2 at recall 1/2), so AP = 51 * 0.5 / 101 at each of the 9 thresholds
    shifted = [[("a", 0.9, (3, 0, 13, 10)), ("a", 0.8, (20, 0, 30, 10))]]
    result = coco_map(truth, shifted)
    assert result["map50"] == pytest.approx(1.0)
    assert result["map50_95"] == pytest.approx((1.0 + 9 * (51 * 0.5 / 101)) / 10)
    # a wrong class is a miss, and a class without ground truth is left out of the mean
    assert average_precision(truth, [[("b", 0.9, (0, 0, 10, 10))]], 0.5)["per_class"] == {"a": 0.0}
    assert precision_recall(truth, found) == {"precision": 2 / 3, "recall": 1.0}


def test_decoding_keeps_weaker_boxes_as_click_candidates() -> None:
    from capforge.data.charset import Charset
    from capforge.modes.efficientdet.mode import EfficientDetMode
    from capforge.settings import load_settings

    settings = load_settings(None, ["MODE=EFFICIENTDET", "DETECTION_THRESHOLD=0.5"])
    mode = EfficientDetMode(Charset(["a", "b"], None), settings, 1)
    output = np.zeros((len(anchors_for(128, 256, settings.ANCHOR_SCALE)), 6), np.float32)
    output[[100, 2000], 4 + 1] = [0.9, 0.2]  # a strong "b" and a weak "b" far from it
    prediction = mode.decode(output[None])[0]
    assert prediction.text == "b" and [b["score"] for b in prediction.boxes] == [pytest.approx(0.9)]
    assert sorted(c["score"] for c in prediction.candidates) == [pytest.approx(0.2), pytest.approx(0.9)]
    assert "candidates" not in prediction.to_dict()


def colour_recognizer(works: Path) -> Path:
    """works/colours: a real NUM_CLASSES model, hand-weighted to tell red, green and blue
    crops apart, exported through save_model's ONNX export and parity check."""
    import keras

    from capforge.cli import invoke
    from capforge.workspace import create_workspace

    ws = create_workspace(works, "colours", "NUM_CLASSES")
    ws.init_layout()
    rgb = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
    for name, colour in rgb.items():
        Image.new("RGB", (20, 20), colour).save(ws.split_dir("validation") / f"{name}_1.png")
    inputs = keras.Input((16, 16, 3), name="image")
    dense = keras.layers.Dense(3, activation="softmax", name="probs")
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(inputs)))
    weights = np.zeros((3, 3), np.float32)  # channel r, g, b -> class blue, green, red
    weights[0, 2] = weights[1, 1] = weights[2, 0] = 20.0
    dense.set_weights([weights, np.zeros(3, np.float32)])
    ws.checkpoints.mkdir(parents=True, exist_ok=True)
    model.save(ws.checkpoints / "best.keras")
    record = {"mode": "NUM_CLASSES", "charset": {"symbols": list(COLOURS), "blank": None}, "label_width": 1,
              "preprocessing": {"height": 16, "width": 16, "channels": 3, "resize": "stretch"},
              "settings": {"LABEL_SMOOTHING": 0.0}}
    (ws.checkpoints / "training.json").write_text(json.dumps(record))
    assert invoke("export", ws.root, []) == 0
    return ws.root


def test_click_order_with_a_recogniser_built_from_a_real_tiny_model(tmp_path: Path) -> None:
    recognizer = Predictor(colour_recognizer(tmp_path / "works") / "exports" / "current")
    image = Image.new("RGB", (120, 40), "white")
    draw = ImageDraw.Draw(image)
    boxes = []
    for x, colour in zip((10, 50, 90), ((220, 30, 30), (30, 200, 30), (30, 30, 220))):
        draw.rectangle((x, 10, x + 20, 30), fill=colour)
        boxes.append({"label": "glyph", "score": 0.9, "x1": x, "y1": 10, "x2": x + 20, "y2": 30})
    scores = recognizer_scores(image, boxes, recognizer)
    clicks = order_clicks(prompt_targets("blue,red,green"), boxes, scores)
    assert [(c["target"], c["x"], c["y"]) for c in clicks] == [("blue", 100, 20), ("red", 20, 20), ("green", 60, 20)]
    assert all(c["score"] > 0.9 for c in clicks)
    with pytest.raises(TargetNotFound, match="no box matches 'purple'"):
        order_clicks(["purple"], boxes, scores)
    assert prompt_targets(["cat", "dog"]) == ["cat", "dog"] and prompt_targets("a b") == ["a", "b"]


def test_acceptance_scaffold_to_boxes_over_http(tmp_path: Path) -> None:
    """Every step of a click-captcha workspace, with a detector that has learnt something: it
    memorises 16 captchas (validation is the same images, so the best checkpoint is the best
    memorised), and test.py, reading them through the served ONNX model, finds their boxes
    (mAP@0.5 about 0.9 here; an untrained or broken detector, anchors, decoding or mAP, near 0)."""
    works = tmp_path / "works"
    assert new_work(works, "clicks", "--mode", "EFFICIENTDET").returncode == 0
    root = works / "clicks"
    with (root / "settings.py").open("a") as f:
        f.write("CHARSET = 'AB'\nIMAGE_HEIGHT = 64\nIMAGE_WIDTH = 128\nDATA_ENHANCEMENT = False\nLR = 0.01\n"
                "BATCH_SIZE = 8\nEPOCHS = 45\nEARLY_PATIENCE = 45\nLR_PATIENCE = 45\nWEIGHT_AVERAGE = 0\n"
                "VALIDATION_SPLIT = 0.05\nTEST_SPLIT = 0.05\n")
    steps = [("gen_sample_by_captcha.py", "--count", "18", "--seed", "3", "--width", "128", "--height", "64",
              "--length", "2"), ("split_dataset.py",), ("pack_dataset.py",), ("train.py",), ("save_model.py",),
             ("test.py", "--split", "train"), ("test.py",)]
    for script, *args in steps:
        if script == "pack_dataset.py":
            for path in (root / "data" / "train").iterdir():
                shutil.copy(path, root / "data" / "validation" / path.name)
        result = run_script(root, script, *args)
        assert result.returncode == 0, f"{script}: {result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr
    report = json.loads((root / "reports" / "train_report.json").read_text())
    for key in ("map50", "map50_95", "map75", "per_class_ap50", "precision", "recall"):
        assert key in report
    assert report["images"] == 16 and report["objects"] == 32
    assert report["map50"] >= 0.6, report["map50"]
    assert (root / "reports" / "test_predictions.png").stat().st_size > 0
    manifest = json.loads((root / "exports" / "current" / "manifest.json").read_text())
    assert manifest["mode"] == "EFFICIENTDET" and manifest["parity"]["max_abs_diff"] <= 1e-3
    image = next((root / "data" / "test").glob("*.png"))
    with running_app(root) as url:
        answer = requests.post(f"{url}/api/v1/recognize", timeout=30,
                               json={"image": base64.b64encode(image.read_bytes()).decode()})
        assert answer.status_code == 200, answer.text
        assert isinstance(answer.json()["boxes"], list)

    # With every box shown (threshold 0), boxes come sorted left to right inside the image, and a
    # prompt gets the centre of the best box of each target, in the prompt's order.
    (root / "settings.py").open("a").write("DETECTION_THRESHOLD = 0.0\n")
    api = TestClient(create_app(ModelRegistry(works), ServeOptions()))
    body = {"image": base64.b64encode(image.read_bytes()).decode(), "model": "clicks"}
    answer = api.post("/api/v1/recognize", json=body).json()
    boxes = answer["boxes"]
    assert "_candidates" not in answer
    assert boxes and [b["x1"] for b in boxes] == sorted(b["x1"] for b in boxes)
    assert all(0 <= b["x1"] <= b["x2"] <= 128 and 0 <= b["y1"] <= b["y2"] <= 64 for b in boxes)
    target = boxes[0]["label"]
    top = max(b["score"] for b in boxes if b["label"] == target)
    best = {(round((b["x1"] + b["x2"]) / 2, 1), round((b["y1"] + b["y2"]) / 2, 1))
            for b in boxes if b["label"] == target and b["score"] == top}  # an untrained model ties
    clicks = api.post("/api/v1/recognize", json={**body, "prompt": target}).json()["clicks"]
    assert len(clicks) == 1 and clicks[0]["target"] == target and clicks[0]["score"] == top
    assert (clicks[0]["x"], clicks[0]["y"]) in best
    missing = api.post("/api/v1/recognize", json={**body, "prompt": "☃"})
    assert missing.status_code == 422 and missing.json()["error"]["code"] == "target_not_found"
    bad = api.post("/api/v1/recognize", json={**body, "prompt": 5})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_prompt"

    # A CLICK_RECOGNIZER reads each box: every prompted colour gets a click on some box.
    colour_recognizer(works)
    (root / "settings.py").open("a").write("CLICK_RECOGNIZER = 'works/colours'\n")
    api = TestClient(create_app(ModelRegistry(works, ["clicks"]), ServeOptions()))
    clicks = api.post("/api/v1/recognize", json={**body, "prompt": ["red", "blue"]}).json()["clicks"]
    centres = {(round((b["x1"] + b["x2"]) / 2, 1), round((b["y1"] + b["y2"]) / 2, 1)) for b in boxes}
    assert [c["target"] for c in clicks] == ["red", "blue"]
    assert all((c["x"], c["y"]) in centres for c in clicks)
    assert (clicks[0]["x"], clicks[0]["y"]) != (clicks[1]["x"], clicks[1]["y"])  # each box clicked once


def test_augmentation_moves_boxes_with_the_picture() -> None:
    import tensorflow as tf

    from capforge.modes.efficientdet.pipeline import _jitter_geometry

    tf.random.set_seed(5)
    image = np.ones((64, 128, 3), np.float32)
    image[20:40, 30:50] = 0.0  # one dark square, its box below
    boxes = tf.constant([[30.0, 20.0, 50.0, 40.0]])
    for _ in range(10):
        moved, moved_boxes, classes = _jitter_geometry(tf.constant(image), boxes, tf.constant([3]))
        dark = np.argwhere(moved.numpy()[:, :, 0] < 0.5)
        if not len(moved_boxes):  # the square left the picture: it must not be labelled
            assert classes.shape[0] == 0
            continue
        x1, y1, x2, y2 = moved_boxes.numpy()[0]
        assert abs(dark[:, 1].min() - x1) <= 2 and abs(dark[:, 1].max() + 1 - x2) <= 2
        assert abs(dark[:, 0].min() - y1) <= 2 and abs(dark[:, 0].max() + 1 - y2) <= 2
