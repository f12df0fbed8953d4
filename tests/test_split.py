import shutil
from pathlib import Path

from capforge.data.generate import CaptchaSpec, generate

from conftest import run_script


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def split_counts(workspace: Path) -> dict[str, int]:
    return {s: len(list((workspace / "data" / s).iterdir())) for s in ("train", "validation", "test")}


def test_split_by_ratio_loses_nothing_and_is_idempotent(workspace: Path) -> None:
    pool = workspace / "data" / "pool"
    generate(CaptchaSpec("0123456789", 4, 4), pool, 200, seed=2, progress=False)
    before = files(pool)
    result = run_script(workspace, "split_dataset.py")
    assert result.returncode == 0, result.stderr
    assert split_counts(workspace) == {"train": 160, "validation": 20, "test": 20}
    after = {}
    for split in ("train", "validation", "test"):
        after.update(files(workspace / "data" / split))
    assert after == before and not any(pool.iterdir())
    snapshot = {s: sorted(files(workspace / "data" / s)) for s in ("train", "validation", "test")}
    again = run_script(workspace, "split_dataset.py")
    assert again.returncode == 0 and "nothing new to split" in again.stdout
    assert snapshot == {s: sorted(files(workspace / "data" / s)) for s in ("train", "validation", "test")}


def test_same_seed_same_split(tmp_path: Path, workspace: Path) -> None:
    pool = workspace / "data" / "pool"
    generate(CaptchaSpec("0123456789", 4, 4), pool, 50, seed=3, progress=False)
    copy = tmp_path / "copy"
    shutil.copytree(workspace, copy)
    run_script(workspace, "split_dataset.py")
    run_script(copy, "split_dataset.py")
    for split in ("train", "validation", "test"):
        assert files(workspace / "data" / split) == files(copy / "data" / split)


def test_every_class_folder_gives_each_split_its_share(workspace: Path) -> None:
    pool = workspace / "data" / "pool"
    for k in range(10):  # ten classes of 8 images, and one of a single image
        generate(CaptchaSpec("0123456789", 4, 4), pool / f"class{k}", 8, seed=10 + k, progress=False)
    generate(CaptchaSpec("0123456789", 4, 4), pool / "rare", 1, seed=30, progress=False)
    assert run_script(workspace, "split_dataset.py").returncode == 0
    per_class = {s: {f.name: len(list(f.iterdir())) for f in (workspace / "data" / s).iterdir()}
                 for s in ("train", "validation", "test")}
    assert sum(per_class["test"].values()) == sum(per_class["validation"].values()) == 8
    assert per_class["train"]["rare"] == 1 and "rare" not in {*per_class["test"], *per_class["validation"]}
    for k in range(10):  # 16 held out of 80: one or two from each class, never more
        assert per_class["train"][f"class{k}"] in (6, 7), per_class
        assert max(per_class[s].get(f"class{k}", 0) for s in ("validation", "test")) <= 2


def test_exact_duplicates_stay_on_one_side(workspace: Path) -> None:
    pool = workspace / "data" / "pool"
    paths = generate(CaptchaSpec("0123456789", 4, 4), pool, 40, seed=4, progress=False)
    for i in range(5):
        shutil.copy(paths[i], pool / f"{paths[i].name.split('_')[0]}_copy{i}.png")
    assert run_script(workspace, "split_dataset.py").returncode == 0
    # a late copy of an image already split follows it too
    late = pool / f"{paths[5].name.split('_')[0]}_late.png"
    shutil.copy(next((workspace / "data").rglob(paths[5].name)), late)
    assert run_script(workspace, "split_dataset.py").returncode == 0
    for i in range(6):
        content = paths[i].name
        homes = {p.parent.name for p in (workspace / "data").rglob("*.png")
                 if p.read_bytes() == next((workspace / "data").rglob(content)).read_bytes()}
        assert len(homes) == 1, (content, homes)


def test_refuses_when_a_file_is_in_the_way(workspace: Path) -> None:
    pool = workspace / "data" / "pool"
    paths = generate(CaptchaSpec("0123456789", 4, 4), pool, 30, seed=5, progress=False)
    for split in ("train", "validation", "test"):
        (workspace / "data" / split / paths[0].name).write_bytes(b"other content")
    before = files(pool)
    result = run_script(workspace, "split_dataset.py")
    assert result.returncode == 2 and "already exist" in result.stderr and "Nothing was moved" in result.stderr
    assert files(pool) == before


def test_copy_from_outside_keeps_the_source_and_carries_labels(workspace: Path, tmp_path: Path) -> None:
    source = tmp_path / "site_dump"
    paths = generate(CaptchaSpec("0123456789", 4, 4), source, 20, seed=6, progress=False)
    labels = "".join(f"{p.name}\tl{i:03d}\n" for i, p in enumerate(paths))
    (source / "labels.txt").write_text(labels)
    before = files(source)
    result = run_script(workspace, "split_dataset.py", "--source", str(source))
    assert result.returncode == 0, result.stderr
    assert files(source) == before
    carried = "".join((workspace / "data" / s / "labels.txt").read_text()
                      for s in ("train", "validation", "test"))
    assert sorted(carried.splitlines()) == sorted(labels.splitlines())


def test_empty_pool_is_a_clear_error(workspace: Path) -> None:
    result = run_script(workspace, "split_dataset.py")
    assert result.returncode == 2 and "no images in data/pool" in result.stderr


def test_a_test_folder_the_user_gave_stays_as_given(workspace: Path) -> None:
    """TEST_SPLIT = 0 with a data/test of the site's own: no pool image goes there, class folders
    and copies of test images included (a copy stays in the pool, named in the output)."""
    pool, given = workspace / "data" / "pool", workspace / "data" / "test"
    for k in range(7):
        generate(CaptchaSpec("0123456789", 4, 4), pool / f"class{k}", 13, seed=40 + k, progress=False)
    tests = generate(CaptchaSpec("0123456789", 4, 4), given, 20, seed=50, progress=False)
    copies = [pool / "class0" / f"{p.name.split('_')[0]}_again{i}.png" for i, p in enumerate(tests[:2])]
    for test_image, copy in zip(tests, copies):
        shutil.copy(test_image, copy)
    before = files(given)
    with (workspace / "settings.py").open("a") as settings:
        settings.write("TEST_SPLIT = 0.0\n")
    result = run_script(workspace, "split_dataset.py")
    assert result.returncode == 0, result.stderr
    assert files(given) == before
    assert "kept 2 image(s) where they are" in result.stdout and "data/test" in result.stdout
    assert sorted(p.name for p in pool.rglob("*.png")) == sorted(c.name for c in copies)
    counts = split_counts(workspace)
    assert counts["test"] == 20 and counts["validation"] > 0
