"""Click-captcha data (issue 5 groundwork): VOC / YOLO boxes, synthetic click captchas, and
check / split on a detection workspace."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image

from capforge.modes.efficientdet.boxes import Box, read_boxes, read_voc, read_yolo, voc_xml
from capforge.modes.efficientdet.clicks import ClickSpec
from capforge.data.generate import generate
from capforge.errors import DataError

from conftest import new_work, run_script


def test_voc_round_trip_and_malformed_files(tmp_path: Path) -> None:
    boxes = [Box("a", 10, 12, 40, 44), Box("七", 50, 5, 70, 30)]
    (tmp_path / "x.xml").write_bytes(voc_xml("x.png", 100, 60, boxes))
    assert read_voc(tmp_path / "x.xml") == (boxes, (100, 60))
    (tmp_path / "broken.xml").write_text("<annotation><object>")
    with pytest.raises(DataError, match="broken.xml: not a readable VOC XML"):
        read_voc(tmp_path / "broken.xml")
    (tmp_path / "nobox.xml").write_text("<annotation><object><name>a</name></object></annotation>")
    with pytest.raises(DataError, match="object 1 needs <name> and <bndbox>"):
        read_voc(tmp_path / "nobox.xml")
    (tmp_path / "corner.xml").write_text(
        "<annotation><object><name>a</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax></bndbox>"
        "</object></annotation>")
    with pytest.raises(DataError, match="lacks one of xmin"):
        read_voc(tmp_path / "corner.xml")


def test_yolo_boxes_and_their_errors(tmp_path: Path) -> None:
    (tmp_path / "img.txt").write_text("1 0.5 0.5 0.2 0.4\n\n0 0.1 0.1 0.1 0.1\n")
    boxes = read_yolo(tmp_path / "img.txt", ["cat", "dog"], 200, 100)
    assert boxes[0] == Box("dog", 80, 30, 120, 70) and boxes[1].label == "cat"
    (tmp_path / "bad.txt").write_text("0 0.5 0.5\n")
    with pytest.raises(DataError, match="bad.txt line 1: expected 'class cx cy w h'"):
        read_yolo(tmp_path / "bad.txt", ["cat"], 10, 10)
    (tmp_path / "far.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DataError, match="class 7 is not in classes.txt"):
        read_yolo(tmp_path / "far.txt", ["cat"], 10, 10)
    Image.new("RGB", (10, 10)).save(tmp_path / "far.png")
    with pytest.raises(DataError, match="no classes.txt"):
        read_boxes(tmp_path / "far.png", 10, 10, tmp_path)
    assert Box("a", 5, 5, 20, 20).problem(10, 10, None) is not None
    assert "no area" in Box("a", 5, 5, 5, 9).problem(10, 10, None)
    assert "not in CHARSET" in Box("z", 1, 1, 4, 4).problem(10, 10, {"a"})


def test_synthetic_click_captchas_are_deterministic_with_valid_boxes(tmp_path: Path) -> None:
    spec = ClickSpec("0123456789abcdef", 3, 5)
    images = generate(spec, tmp_path / "a", 12, seed=9, progress=False)
    generate(spec, tmp_path / "b", 12, seed=9, workers=1, progress=False)
    for path in images:
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes()
        boxes, size = read_voc(path.with_suffix(".xml"))
        targets = path.name.split("_")[0]
        assert [b.label for b in boxes] == list(targets) and len(set(targets)) == len(targets)
        assert 3 <= len(boxes) <= 5 and size == (320, 160)
        assert all(b.problem(320, 160, set(spec.symbols)) is None for b in boxes)
    with pytest.raises(DataError, match="at least 5 distinct symbols"):
        ClickSpec("abc", 3, 5)


def test_detection_workspace_check_and_split(tmp_path: Path) -> None:
    assert new_work(tmp_path / "works", "clicks", "--mode", "EFFICIENTDET").returncode == 0
    root = tmp_path / "works" / "clicks"
    (root / "settings.py").open("a").write("CHARSET = '0123456789'\n")
    made = run_script(root, "gen_sample_by_captcha.py", "--count", "30", "--seed", "4")
    assert made.returncode == 0 and "VOC XML" in made.stdout
    clean = run_script(root, "check_file.py")
    assert clean.returncode == 0, clean.stdout
    assert "boxes; width min" in clean.stdout and "IMAGE_WIDTH = 320" in clean.stdout
    # generated glyphs are ~20 px at the 128x256 default input: smaller anchors than the paper's 4
    assert re.search(r"ANCHOR_SCALE = (1\.5|2\.0|2\.5)  \[2\.5\]", clean.stdout), clean.stdout
    pool = root / "data" / "pool"
    images = sorted(pool.glob("*.png"))
    tree = ET.parse(images[0].with_suffix(".xml"))
    tree.getroot().find("object/bndbox/xmax").text = "9999"
    tree.write(images[0].with_suffix(".xml"))
    images[1].with_suffix(".xml").unlink()
    found = run_script(root, "check_file.py", "--fix")
    assert f"bad_boxes       data/pool/{images[0].name}: box" in found.stdout and "outside" in found.stdout
    assert f"bad_boxes       data/pool/{images[1].name}: {images[1].name} has no label file" in found.stdout
    quarantined = sorted(p.name for p in (root / "data" / "quarantine" / "pool").iterdir())
    assert quarantined == sorted([images[0].name, images[0].with_suffix(".xml").name, images[1].name])
    split = run_script(root, "split_dataset.py")
    assert split.returncode == 0 and "moved 28 images" in split.stdout
    for folder in ("train", "validation", "test"):
        for image in (root / "data" / folder).glob("*.png"):
            assert image.with_suffix(".xml").is_file()
    packed = run_script(root, "pack_dataset.py")
    assert packed.returncode == 0, packed.stderr
    manifest = json.loads((root / "packed" / "manifest.json").read_text())
    train_images = sorted((root / "data" / "train").glob("*.png"))
    assert manifest["splits"]["train"]["count"] == len(train_images)
    # the labels of a detection pack are the box classes of each image, in file order
    assert manifest["splits"]["train"]["labels"][0] == [b.label for b in read_voc(train_images[0].with_suffix(".xml"))[0]]


def test_ddddocr_reads_each_box_and_clicks_chinese_characters_in_the_prompts_order() -> None:
    """CLICK_RECOGNIZER = 'ddddocr': no model of the site reads its characters; a pretrained reader
    matches each prompted character to the box where it is likeliest."""
    from PIL import ImageDraw, ImageFont

    from capforge.data.generate import font_files
    from capforge.modes import MODE_CLASSES
    from capforge.modes.efficientdet.order import order_clicks, prompt_targets, recognizer_scores
    from capforge.serve.predictor import companion_of

    fonts = font_files("", "济") if Path("/usr/share/fonts/truetype/wqy").is_dir() else ()
    if not fonts:
        pytest.skip("no CJK font installed (./run installs fonts-wqy-microhei as root)")
    reader = companion_of(MODE_CLASSES["EFFICIENTDET"], {"CLICK_RECOGNIZER": "ddddocr"}, Path("."))
    image = Image.new("RGB", (400, 200), (120, 160, 200))
    draw, font = ImageDraw.Draw(image), ImageFont.truetype(fonts[0], 34)
    places = {"济": (40, 60), "拉": (300, 40), "电": (170, 120), "请": (60, 140)}
    boxes = []
    for char, (x, y) in places.items():
        draw.text((x, y), char, font=font, fill=(20, 20, 20))
        boxes.append({"label": "text", "score": 0.9, "x1": x - 4, "y1": y - 2, "x2": x + 42, "y2": y + 44})
    clicks = order_clicks(prompt_targets("拉济电"), boxes, recognizer_scores(image, boxes, reader))
    assert [c["target"] for c in clicks] == ["拉", "济", "电"]
    assert [(round(c["x"]), round(c["y"])) for c in clicks] == [(319, 61), (59, 81), (189, 141)]
