"""The predict step, as a user runs it: predict.py FOLDER reads every image into a CSV."""

import csv
import random
from pathlib import Path

from PIL import Image

from clean_data import render
from conftest import run_script


def test_predict_reads_a_folder_into_a_csv_and_keeps_a_row_for_every_file(served_works: Path,
                                                                         tmp_path: Path) -> None:
    folder = tmp_path / "scraped"
    (folder / "day2").mkdir(parents=True)
    rng = random.Random(5)
    truth = {}
    for i, text in enumerate(["1234", "907", "5521", "38", "6640", "172"]):
        name = f"{'day2/' if i % 2 else ''}capture{i}.png"
        render(text, 96, 32, rng).save(folder / name)
        truth[name] = text
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "notes.txt").write_text("not an image")
    Image.new("RGB", (300, 40), "white").save(folder / "blank.jpg")  # nothing to read
    out = tmp_path / "answers.csv"
    result = run_script(served_works / "digits", "predict.py", str(folder), "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "read 8 images" in result.stdout and "1 unreadable" in result.stdout
    rows = {row["file"]: row for row in csv.DictReader(out.open(encoding="utf-8"))}
    assert sorted(rows) == sorted([*truth, "broken.png", "blank.jpg"])  # the .txt is not an image
    right = sum(rows[name]["answer"] == text for name, text in truth.items())
    assert right >= 5, {name: rows[name]["answer"] for name in truth}  # the fixture model reads its digits
    assert rows["broken.png"]["accepted"] == "False"
    assert rows["broken.png"]["problem"].startswith("not an image Pillow can read")
    assert rows["blank.jpg"]["accepted"] == "False"  # an empty answer is never accepted
    assert not out.with_name("answers.csv.part").exists()


def test_predict_on_a_missing_folder_says_so_without_a_traceback(served_works: Path, tmp_path: Path) -> None:
    result = run_script(served_works / "digits", "predict.py", str(tmp_path / "nowhere"))
    assert result.returncode != 0 and "is not a folder" in result.stderr
    assert "Traceback" not in result.stderr
