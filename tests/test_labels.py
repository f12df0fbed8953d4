from pathlib import Path

import pytest

from capforge.data.labels import LabelReader, label_from_name, read_label_file
from capforge.errors import DataError
from capforge.settings import load_settings


def test_label_from_name_with_separators() -> None:
    assert label_from_name("abcd_17322d.png", "_-") == "abcd"
    assert label_from_name("abcd-0.png", "_-") == "abcd"
    assert label_from_name("ab-cd_0.png", "_") == "ab-cd"
    assert label_from_name("abcd.png", "_-") == "abcd"
    assert label_from_name("_17322d.png", "_-") is None
    assert label_from_name("ab_cd.png", "") == "ab_cd"


def test_case_folding_and_class_folders(tmp_path: Path) -> None:
    reader = LabelReader(load_settings(None))
    assert reader.label(tmp_path / "AbCd_1.png", tmp_path) == "abcd"
    sensitive = LabelReader(load_settings(None, ["CASE_SENSITIVE=True"]))
    assert sensitive.label(tmp_path / "AbCd_1.png", tmp_path) == "AbCd"
    classes = LabelReader(load_settings(None, ["MODE=NUM_CLASSES"]), by_folder=True)
    assert classes.label(tmp_path / "Cat" / "x_1.jpg", tmp_path) == "cat"


def test_labels_txt_and_csv(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "labels.txt").write_text("img1.png\tAB12\nimg2.png xy9\nimg3.png\t九减四\t5\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "labels.csv").write_text("filename,label\nimg1.png,qq7\nimg2.png,3+4,7\n")
    reader = LabelReader(load_settings(None, ["CASE_SENSITIVE=True"]))
    assert reader.label(tmp_path / "a" / "img1.png", tmp_path) == "AB12"
    assert reader.label(tmp_path / "a" / "img2.png", tmp_path) == "xy9"
    assert reader.label(tmp_path / "a" / "other.png", tmp_path) is None
    assert reader.label(tmp_path / "b" / "img1.png", tmp_path) == "qq7"
    # a third column is the answer the site wants, beside the label the model learns
    assert (reader.label(tmp_path / "a" / "img3.png", tmp_path), reader.answer(tmp_path / "a" / "img3.png")) == ("九减四", "5")
    assert (reader.label(tmp_path / "b" / "img2.png", tmp_path), reader.answer(tmp_path / "b" / "img2.png")) == ("3+4", "7")
    assert reader.answer(tmp_path / "a" / "img1.png") is None


def test_malformed_labels_file_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("ok.png abc\nbroken.png\n")
    with pytest.raises(DataError, match="labels.txt line 2"):
        read_label_file(tmp_path / "labels.txt")


def test_hook_wins(tmp_path: Path) -> None:
    reader = LabelReader(load_settings(None), hook=lambda p: "zz" if p.name.startswith("x") else None)
    assert reader.label(tmp_path / "x_1.png", tmp_path) == "zz"
    assert reader.label(tmp_path / "ab_1.png", tmp_path) == "ab"


def test_default_separators_read_a_second_copy_name() -> None:
    from capforge.settings import load_settings

    separators = load_settings(None).LABEL_SEPARATOR
    assert label_from_name("9628.1.png", separators) == "9628"
    assert label_from_name("6+0__-(2).jpg", separators) == "6+0"
