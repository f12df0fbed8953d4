from pathlib import Path

import pytest
from PIL import Image

from capforge.data.generate import CaptchaSpec, font_files, generate, named_charset, parse_length
from capforge.errors import DataError

from conftest import run_script


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_same_seed_same_files_whatever_the_workers(tmp_path: Path) -> None:
    spec = CaptchaSpec("0123456789abc", 3, 5, 120, 40)
    generate(spec, tmp_path / "a", 120, seed=7, workers=1, progress=False)
    generate(spec, tmp_path / "b", 120, seed=7, workers=2, progress=False)
    generate(spec, tmp_path / "c", 120, seed=8, workers=2, progress=False)
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")
    assert set(snapshot(tmp_path / "a")).isdisjoint(snapshot(tmp_path / "c"))


def test_labels_lengths_charset_size_and_format(tmp_path: Path) -> None:
    paths = generate(CaptchaSpec("xyz", 2, 6, 100, 30, "jpg"), tmp_path, 60, seed=1, progress=False)
    labels = [p.name.split("_")[0] for p in paths]
    assert {len(label) for label in labels} <= set(range(2, 7)) and len(set(map(len, labels))) > 2
    assert set("".join(labels)) <= set("xyz")
    with Image.open(paths[0]) as image:
        assert image.format == "JPEG" and image.size == (100, 30)
    assert not list(tmp_path.glob(".*part"))


def test_refuses_to_overwrite_and_checks_arguments(tmp_path: Path) -> None:
    spec = CaptchaSpec("01", 4, 4)
    generate(spec, tmp_path, 5, seed=3, progress=False)
    before = snapshot(tmp_path)
    with pytest.raises(DataError, match="already exist"):
        generate(spec, tmp_path, 5, seed=3, progress=False)
    assert snapshot(tmp_path) == before
    with pytest.raises(DataError, match="unknown image format 'tga'"):
        CaptchaSpec("01", 4, 4, fmt="tga")
    with pytest.raises(DataError, match="received '4-x'"):
        parse_length("4-x")


def test_script_writes_count_from_settings_charset(workspace: Path) -> None:
    result = run_script(workspace, "gen_sample_by_captcha.py", "--count", "300")
    assert result.returncode == 0, result.stderr
    names = [p.name for p in (workspace / "data" / "pool").iterdir()]
    assert len(names) == 300
    assert all(len(n.split("_")[0]) == 4 and n.split("_")[0].isdigit() for n in names)
    bad = run_script(workspace, "gen_sample_by_captcha.py", "--count", "5", "--length", "0")
    assert bad.returncode == 2 and "label length" in bad.stderr and "Traceback" not in bad.stderr


def test_chinese_captchas_are_drawn_with_an_installed_cjk_font_from_the_common_characters(workspace: Path) -> None:
    common = named_charset("hanzi")
    assert len(common) == 3755 and common[0] == "啊" and len(set(named_charset("hanzi:300"))) == 300
    with pytest.raises(DataError, match="hanzi:N"):
        named_charset("hanzi:0")
    if not font_files_or_none("九"):
        pytest.skip("no CJK font installed (./run installs fonts-wqy-microhei as root)")
    result = run_script(workspace, "gen_sample_by_captcha.py", "--count", "6", "--charset", "hanzi:300",
                        "--seed", "3")
    assert result.returncode == 0, result.stderr
    names = sorted(p.name.split("_")[0] for p in (workspace / "data" / "pool").iterdir())
    assert len(names) == 6 and all(len(n) == 4 and set(n) <= set(named_charset("hanzi:300")) for n in names)
    # drawn, not tofu: the CJK font's glyphs differ from each other, the default font's boxes do not
    a, b = (render_bytes("啊啊啊啊", fonts) for fonts in (font_files("", "九"), font_files("", "九")))
    assert a == b and a != render_bytes("阿阿阿阿", font_files("", "九"))


def test_font_path_takes_a_file_or_a_folder_and_says_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="neither a font file nor a folder"):
        font_files(str(tmp_path), "abc")
    assert font_files("", "abc") == ()


def font_files_or_none(charset: str) -> tuple[str, ...] | None:
    try:
        return font_files("", charset)
    except DataError:
        return None


def render_bytes(text: str, fonts: tuple[str, ...]) -> bytes:
    from capforge.data.generate import render

    return render(CaptchaSpec(text, 4, 4, fmt="png", fonts=fonts), text, 0, 0)
