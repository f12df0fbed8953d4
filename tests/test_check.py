import io
import json
from pathlib import Path

from PIL import Image

from conftest import new_work, run_script


def png(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def fill_mixed_folder(pool: Path) -> None:
    """Good images in every mode, plus three bad files."""
    good = png(Image.new("RGB", (100, 40), (200, 10, 10)))
    (pool / "1234_good.png").write_bytes(good)
    (pool / "5678_onebit.png").write_bytes(png(Image.new("1", (90, 30), 1)))
    (pool / "1111_rgba.png").write_bytes(png(Image.new("RGBA", (110, 40), (0, 0, 255, 90))))
    (pool / "2222_cmyk.jpg").write_bytes(png(Image.new("CMYK", (120, 42), (10, 20, 30, 40)), "JPEG"))
    frames = [Image.new("P", (100, 36), c) for c in (3, 90)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    (pool / "3333_anim.gif").write_bytes(buffer.getvalue())
    (pool / "4444_truncated.png").write_bytes(good[: len(good) // 2])
    (pool / "5555_empty.png").write_bytes(b"")
    (pool / "6666_text.png").write_text("this is not a picture")


def test_mixed_folder_names_each_bad_file_and_fix_moves_them(workspace: Path) -> None:
    pool = workspace / "data" / "pool"
    fill_mixed_folder(pool)
    result = run_script(workspace, "check_file.py")
    assert result.returncode == 1
    bad = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("  unreadable")}
    assert bad == {"data/pool/4444_truncated.png:", "data/pool/5555_empty.png:", "data/pool/6666_text.png:"}
    assert "corrupt or truncated" in result.stdout and "empty (0 bytes)" in result.stdout
    assert "problems: 3 unreadable" in result.stdout
    assert "height min 30 / median 40 / max 42" in result.stdout
    report = json.loads((workspace / "data" / "check_report.json").read_text())
    assert report["counts"] == {"pool": 8}

    fixed = run_script(workspace, "check_file.py", "--fix")
    assert fixed.returncode == 0 and "moved 3 file(s)" in fixed.stdout
    assert sorted(p.name for p in pool.iterdir()) == [
        "1111_rgba.png", "1234_good.png", "2222_cmyk.jpg", "3333_anim.gif", "5678_onebit.png"]
    quarantined = sorted(p.name for p in (workspace / "data" / "quarantine" / "pool").iterdir())
    assert quarantined == ["4444_truncated.png", "5555_empty.png", "6666_text.png"]
    assert "unreadable" in (workspace / "data" / "quarantine" / "REASONS.tsv").read_text()
    assert run_script(workspace, "check_file.py").returncode == 0


def test_label_problems_duplicates_and_suggestions(workspace: Path) -> None:
    image = png(Image.new("L", (160, 60), 99))
    data = workspace / "data"
    (data / "pool" / "12a4_1.png").write_bytes(png(Image.new("L", (160, 60), 1)))
    (data / "pool" / "123456_1.png").write_bytes(png(Image.new("L", (160, 60), 2)))
    (data / "pool" / "_nolabel.png").write_bytes(png(Image.new("L", (160, 60), 3)))
    (data / "train" / "1234_a.png").write_bytes(image)
    (data / "train" / "1234_b.png").write_bytes(image)
    (data / "test" / "1234_c.png").write_bytes(image)
    (data / "test" / "9999_c.png").write_bytes(image)
    result = run_script(workspace, "check_file.py")
    out = result.stdout
    assert "unknown_symbols data/pool/12a4_1.png: label '12a4' has ['a']" in out
    assert "too_long" not in out  # CTC reads any length
    assert "no_label        data/pool/_nolabel.png" in out
    assert "duplicate       data/train/1234_b.png: same image as 1234_a.png" in out
    assert "cross_split     data/test/1234_c.png: same image as train/1234_a.png" in out
    assert "label_conflict  data/test/9999_c.png" in out
    assert "IMAGE_HEIGHT = 48  [48]" in out and "CHARSET = '1234569'" in out


def new_workspace(tmp_path: Path, name: str, mode: str) -> Path:
    assert new_work(tmp_path / "works", name, "--mode", mode).returncode == 0
    return tmp_path / "works" / name


def write_labels(pool: Path, lengths: range, size: tuple[int, int] = (160, 60)) -> None:
    for n in lengths:
        (pool / f"{'7' * n}_{n}.png").write_bytes(png(Image.new("L", size, 10 * n)))


def test_ctc_has_no_length_limit_and_ordinary_has(tmp_path: Path) -> None:
    ctc = new_workspace(tmp_path, "ctc", "CTC")
    write_labels(ctc / "data" / "pool", range(2, 10))
    result = run_script(ctc, "check_file.py")
    assert result.returncode == 0, result.stdout
    assert "too_long" not in result.stdout and "CAPTCHA_LENGTH" not in result.stdout
    report = json.loads((ctc / "data" / "check_report.json").read_text())
    assert report["findings"] == [] and "CAPTCHA_LENGTH" not in report["suggestions"]
    assert report["label_lengths"] == {str(n): 1 for n in range(2, 10)}

    ordinary = new_workspace(tmp_path, "ordinary", "ORDINARY")
    write_labels(ordinary / "data" / "pool", range(2, 10))
    result = run_script(ordinary, "check_file.py")
    assert result.returncode == 1
    assert "label '77777' has 5 > CAPTCHA_LENGTH=4" in result.stdout
    assert result.stdout.count("too_long ") == 5  # lengths 5 to 9
    assert "CAPTCHA_LENGTH = 9  [4]" in result.stdout  # from every label, the long ones too
    with (ordinary / "settings.py").open("a") as f:
        f.write("CAPTCHA_LENGTH = 9\n")
    assert run_script(ordinary, "check_file.py").returncode == 0


def test_size_suggestion_fits_the_backbone_and_the_longest_label() -> None:
    from collections import Counter

    from capforge.check import suggest
    from capforge.modes.base import COLUMNS_PER_SYMBOL

    symbols = Counter("0123456789")
    for size, longest in (((80, 25), 5), ((60, 60), 4), ((700, 80), 8), ((735, 80), 8), ((250, 80), 4)):
        out, reason = suggest([size] * 20, symbols, Counter({longest: 20, 2: 5}), "CTC")
        assert 32 <= out["IMAGE_HEIGHT"] <= 64, (size, out)
        steps = out["IMAGE_WIDTH"] // 8  # the text backbones keep width / 8 columns
        assert steps >= 2 * longest + 1, (size, out)  # room for a blank between repeated characters
        assert out["IMAGE_WIDTH"] <= COLUMNS_PER_SYMBOL[1] * longest + 8, (size, out)  # no empty steps paid for
        assert f"width {out['IMAGE_WIDTH']}" in reason and "CAPTCHA_LENGTH" not in out
        assert "PHOTO_AUGMENT" not in out  # text is never mirrored
    wide, _ = suggest([(700, 80)] * 20, symbols, Counter({4: 20}), "CTC")
    assert wide["RESIZE"] == "stretch"  # padding 700x80 into 48x192 would shrink the text to 22 px
    short, reason = suggest([(200, 80)] * 20, symbols, Counter({6: 20}), "CTC")
    assert short["IMAGE_WIDTH"] >= 6 * COLUMNS_PER_SYMBOL[0] and short["RESIZE"] == "stretch", reason  # no empty fifth
    fitting, _ = suggest([(250, 80)] * 20, symbols, Counter({4: 20}), "CTC")
    assert "RESIZE" not in fitting  # the aspect's own width is in the band: padding keeps the glyphs' shape


def test_a_large_charset_is_suggested_a_faster_rate() -> None:
    """Chinese text (hundreds of symbols) gets the rate and head it learns with within a budget; a small charset
    keeps the default, and a class mode is not given the text modes' rate."""
    from collections import Counter

    from capforge.check import suggest
    from capforge.modes.ctc import LARGE_CHARSET, LARGE_CHARSET_LR

    hanzi = Counter(chr(0x4E00 + i) for i in range(LARGE_CHARSET))
    out, reason = suggest([(160, 60)] * 20, hanzi, Counter({4: 20}), "CTC")
    assert out["LR"] == LARGE_CHARSET_LR and f"{LARGE_CHARSET} symbols" in reason, (out, reason)
    assert out["CTC_HEAD"] == "dense" and "CTC_HEAD = 'dense'" in reason, (out, reason)
    tiny = suggest([(160, 60)] * 20, hanzi, Counter({4: 20}), "CTC_TINY")[0]  # its own head: only the rate
    assert tiny["LR"] == LARGE_CHARSET_LR and "CTC_HEAD" not in tiny, tiny
    assert not {"LR", "CTC_HEAD"} & set(suggest([(160, 60)] * 20, Counter("0123456789"), Counter({4: 20}), "CTC")[0])
    assert "LR" not in suggest([(64, 64)] * 20, hanzi, Counter({1: 20}), "NUM_CLASSES")[0]


def test_colour_is_suggested_for_colourful_tiles(tmp_path: Path) -> None:
    ws = new_workspace(tmp_path, "tiles", "NUM_CLASSES")
    for name, colour in (("red", (220, 20, 20)), ("green", (20, 200, 40)), ("blue", (30, 30, 220))):
        folder = ws / "data" / "pool" / name
        folder.mkdir()
        for i in range(3):
            (folder / f"{i}.jpg").write_bytes(png(Image.new("RGB", (72, 73), colour), "JPEG"))
    run_script(ws, "check_file.py")
    report = json.loads((ws / "data" / "check_report.json").read_text())
    assert report["suggestions"]["IMAGE_CHANNELS"] == 3 and report["suggestions"]["IMAGE_HEIGHT"] == 72
    assert report["suggestions"]["CHARSET"] == ["blue", "green", "red"]
    assert report["suggestions"]["PHOTO_AUGMENT"] is True  # photos may be mirrored and zoomed
    assert "colour kept" in report["reasoning"]
