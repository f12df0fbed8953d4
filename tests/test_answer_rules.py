"""Answer rules: what the site gets for a reading (ANSWER = 'arithmetic' answers the result)."""

from __future__ import annotations

import base64
import json
import random
import re
from pathlib import Path

import pytest
import requests

from capforge import Recognizer
from capforge.modes import Prediction
from capforge.data.numerals import chinese_number, chinese_numeral
from capforge.modes.answer_rules import RULES, evaluate, formatted
from clean_data import fill_pool, render
from conftest import run_script, running_app


@pytest.mark.parametrize("reading, result", [
    ("12+15", "27"), ("九减四", "5"), ("7×2", "14"), ("3+5=?", "8"), ("3+5＝？", "8"), ("8x3", "24"),
    ("6÷4", "1.5"), ("1/3", "0.33"), ("3-5", "-2"), ("2+3*4", "14"), ("十二加八等于几", "20"),
    ("二十乘以三", "60"), ("一百零五减五", "100"), ("１２＋３", "15"), ("-4+10", "6"), ("9 - 4 = ?", "5"),
])
def test_an_expression_is_answered_with_its_result(reading: str, result: str) -> None:
    answer = RULES["arithmetic"].answer(Prediction(reading, 0.9))
    assert (answer.text, answer.confidence) == (result, 0.9)
    assert answer.fields == {"reading": reading, "rule": "arithmetic"}


@pytest.mark.parametrize("reading", ["3×", "12", "", "ab+1", "4÷0", "+", "1+2=3+4", "3++4"])
def test_a_reading_that_is_no_expression_is_not_accepted(reading: str) -> None:
    answer = RULES["arithmetic"].answer(Prediction(reading, 0.97))
    assert (answer.text, answer.confidence, answer.fields["reading"]) == ("", 0.0, reading)
    assert RULES["arithmetic"].answer_of(reading) is None


def test_chinese_numerals() -> None:
    assert [chinese_number(t) for t in ("十", "十二", "二十", "三十五", "一百零五", "两千", "一二", "二二十")] == \
        [10, 12, 20, 35, 105, 2000, 12, None]
    assert evaluate("2+2") == 4 and formatted(evaluate("10÷4")) == "2.5"


def test_text_answers_the_reading_itself() -> None:
    answer = RULES["text"].answer(Prediction("x7k2", 0.8))
    assert (answer.text, answer.confidence, answer.fields) == ("x7k2", 0.8, {})


def test_from_training_to_the_served_result_on_generated_arithmetic(tmp_path: Path) -> None:
    from capforge.cli import invoke
    from capforge.workspace import create_workspace

    ws = create_workspace(tmp_path / "works", "sums", "CTC_TINY")
    with (ws.root / "settings.py").open("a") as f:
        f.write("ANSWER = 'arithmetic'\n")
    refused = run_script(ws.root, "gen_sample_by_captcha.py", "--count", "5")
    assert refused.returncode != 0 and "LABEL_SEPARATOR = '_'" in refused.stderr and not list(ws.pool.iterdir())
    with (ws.root / "settings.py").open("a") as f:
        f.write("LABEL_SEPARATOR = '_'\nIMAGE_HEIGHT = 32\nIMAGE_WIDTH = 96\n"
                "CAPTCHA_LENGTH = 5\nEPOCHS = 30\nBATCH_SIZE = 16\nLR = 0.003\nDATA_ENHANCEMENT = False\n")
    fill_pool(ws.pool, 500, operators="+-")
    render("1234", 96, 32, random.Random(1)).save(ws.pool / "1234_not_a_sum.png")
    check = run_script(ws.root, "check_file.py")
    assert "not_answerable" in check.stdout and "1234_not_a_sum.png" in check.stdout, check.stdout
    (ws.pool / "1234_not_a_sum.png").unlink()
    for step in ("split", "pack", "train", "export", "test"):
        assert invoke(step, ws.root, []) == 0, step
    report = json.loads((ws.root / "reports" / "test_report.json").read_text())
    assert report["rule"] == "arithmetic" and report["answer_accuracy"] >= 0.9, report["answer_accuracy"]
    picture = next(p for p in sorted((ws.root / "data" / "test").glob("*.png")))
    label = picture.name.split("_")[0]
    with running_app(ws.root, "--demo-captcha") as url:
        sent = requests.post(f"{url}/api/v1/recognize", timeout=30,
                             json={"image": base64.b64encode(picture.read_bytes()).decode()}).json()
        crawler = run_script(ws.root, "spider_example.py", "--url", url, "--count", "1", "--attempts", "2")
    # the crawler types the result, not what it read (the demo route draws sums the model may misread)
    assert re.search(r"attempt 1: type '-?[0-9.]*' \(read '.*'\)", crawler.stdout), crawler.stdout + crawler.stderr
    assert sent == sent | {"result": str(eval(label)), "reading": label, "rule": "arithmetic", "accepted": True}
    answer = Recognizer(ws.root).recognize(picture)
    assert {k: answer[k] for k in ("result", "reading", "rule")} == {k: sent[k] for k in ("result", "reading", "rule")}


def test_the_generator_draws_expressions_sites_ask_for() -> None:
    from capforge.data.generate import CaptchaSpec, sample_name

    spec = CaptchaSpec("0123456789+-×÷", 1, 1, expressions=True)
    labels = [sample_name(spec, 3, i)[0] for i in range(300)]
    values = [evaluate(label) for label in labels]
    assert all(v is not None and v >= 0 and v.denominator == 1 for v in values)  # no negatives, even divisions
    assert {op for label in labels for op in "+-×÷" if op in label} == set("+-×÷")
    only_sums = CaptchaSpec("0123456789+", 1, 1, expressions=True)
    assert all("+" in sample_name(only_sums, 3, i)[0] for i in range(50))  # the charset's operators only
    chinese = CaptchaSpec("零一二三四五六七八九十加减", 1, 1, expressions=True)
    drawn = [sample_name(chinese, 3, i)[0] for i in range(200)]
    assert all(set(label) <= set("零一二三四五六七八九十加减") for label in drawn), drawn[:5]
    assert {op for label in drawn for op in "加减" if op in label} == set("加减")
    assert all(v is not None and v >= 0 for v in map(evaluate, drawn))
    assert [chinese_number(chinese_numeral(n)) for n in range(100)] == list(range(100))


def test_a_labels_file_may_give_the_result_beside_the_expression(tmp_path: Path) -> None:
    """labels.txt 'name<TAB>expression<TAB>result': check_file.py holds the result to ANSWER's rule
    and names a line where they disagree; split_dataset.py carries both columns."""
    from capforge.workspace import create_workspace

    ws = create_workspace(tmp_path, "sums", "CTC")
    with (ws.root / "settings.py").open("a") as f:
        f.write("ANSWER = 'arithmetic'\nLABEL_SEPARATOR = '_'\n")
    labels = fill_pool(ws.pool, 30, operators="+-", named=False)
    results = [str(eval(label)) for label in labels]  # the test's own oracle for '12+7', '15-3'
    results[3] = str(int(results[3]) + 1)  # a site's wrong result, or a wrong expression
    (ws.pool / "labels.txt").write_text("".join(f"capture{i:05d}.png\t{label}\t{result}\n"
                                                for i, (label, result) in enumerate(zip(labels, results))))
    check = run_script(ws.root, "check_file.py")
    assert check.returncode == 1, check.stdout
    wrong = [line.strip() for line in check.stdout.splitlines() if line.strip().startswith("wrong_answer")]
    assert wrong == [f"wrong_answer    data/pool/capture00003.png: label {labels[3]!r} answers {str(eval(labels[3]))!r} "
                     f"under ANSWER = 'arithmetic'; the labels file says {results[3]!r}"], check.stdout
    assert run_script(ws.root, "split_dataset.py").returncode == 0
    carried = [line.split("\t") for split in ("train", "validation", "test")
               for line in (ws.split_dir(split) / "labels.txt").read_text().splitlines()]
    assert sorted(tuple(cells) for cells in carried) == sorted(
        (f"capture{i:05d}.png", label, result) for i, (label, result) in enumerate(zip(labels, results)))
