import io
import json
from pathlib import Path

from PIL import Image

from conftest import run_script


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
    assert "too_long        data/pool/123456_1.png: label '123456' has 6 > CAPTCHA_LENGTH=4" in out
    assert "no_label        data/pool/_nolabel.png" in out
    assert "duplicate       data/train/1234_b.png: same image as 1234_a.png" in out
    assert "cross_split     data/test/1234_c.png: same image as train/1234_a.png" in out
    assert "label_conflict  data/test/9999_c.png" in out
    assert "IMAGE_HEIGHT = 64  [48]" in out and "CHARSET = '12349'" in out
