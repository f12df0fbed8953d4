"""Learning from more than the labelled images: data/unlabelled (checked like any other image,
packed without a copy of a judged image, learnt from through pseudo-labels that live in
training's memory only) and generated captchas that warm a model of few labels up (SYNTHETIC)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import run_script
from clean_data import fill_pool


def test_an_unlabelled_copy_of_a_test_image_is_named_and_left_out_of_the_pack(workspace: Path) -> None:
    data = workspace / "data"
    fill_pool(data / "pool", 60, seed=1)
    assert run_script(workspace, "split_dataset.py").returncode == 0
    fill_pool(data / "unlabelled", 20, lengths=(5, 5), seed=2, named=False)  # a crawler's downloads
    (data / "unlabelled" / "capture99.png").write_bytes(b"\x89PNG broken")
    judged = sorted((data / "test").iterdir())[0]
    shutil.copy(judged, data / "unlabelled" / "leak.png")

    result = run_script(workspace, "check_file.py")
    assert result.returncode == 1, result.stdout
    assert (f"cross_split     data/unlabelled/leak.png: same image as test/{judged.name}: training would learn "
            "a test image from data/unlabelled") in result.stdout
    assert "unreadable      data/unlabelled/capture99.png" in result.stdout
    report = json.loads((data / "check_report.json").read_text())
    assert report["counts"]["unlabelled"] == 22
    teaching = sum(report["counts"][split] for split in ("train", "validation"))  # test images teach nothing
    assert report["suggestions"]["SYNTHETIC"] == 2000 and f"{teaching} labelled images are few" in result.stdout

    packed = run_script(workspace, "pack_dataset.py")
    assert packed.returncode == 0, packed.stderr
    assert "unlabelled: 20 images in 1 shard(s) (skipped 2 unreadable or copies of validation and test images" \
        in packed.stdout
    manifest = json.loads((workspace / "packed" / "manifest.json").read_text())
    assert sorted(manifest["skipped"]["unlabelled"]) == ["data/unlabelled/capture99.png",
                                                              "data/unlabelled/leak.png"]
    assert (data / "unlabelled" / "leak.png").exists()  # reported and left out, never deleted


def test_unlabelled_captures_lift_a_model_that_labelled_images_alone_do_not(tmp_path: Path) -> None:
    """150 labelled captchas in one font size; the site's captures and its test images come in many
    sizes. In the same budget, the model that learns from the captures too reads clearly more."""
    from capforge.cli import invoke
    from capforge.settings import load_settings
    from capforge.train import train
    from capforge.workspace import create_workspace

    right = {}  # test images read right
    for unlabelled in ("pseudo", "off"):
        ws = create_workspace(tmp_path / unlabelled, "site", "CTC_TINY")
        with (ws.root / "settings.py").open("a") as f:
            f.write(f"IMAGE_HEIGHT = 32\nIMAGE_WIDTH = 96\nCHARSET = '0123456789'\nBATCH_SIZE = 16\n"
                    f"UNLABELLED = {unlabelled!r}\n")
        fill_pool(ws.split_dir("train"), 150, lengths=(4, 4), seed=1)
        fill_pool(ws.split_dir("validation"), 40, lengths=(4, 4), seed=4)
        fill_pool(ws.split_dir("test"), 300, lengths=(4, 4), seed=3, sizes=(0.5, 0.85))
        fill_pool(ws.unlabelled, 2000, lengths=(4, 4), seed=2, sizes=(0.5, 0.85), named=False)
        before = {folder: sorted(p.name for p in folder.rglob("*")) for folder in
                  (ws.pool, ws.unlabelled, *(ws.split_dir(s) for s in ("train", "validation", "test")))}
        assert invoke("pack", ws.root, []) == 0
        manifest = (ws.packed / "manifest.json").read_text()
        summary = train(ws, load_settings(ws.root), minutes=1.5, verbose=0)
        assert (summary["pseudo_labels"] or 0) > (0 if unlabelled == "pseudo" else -1), summary
        # the pseudo-labels stayed in training's memory: no file, label or packed split changed
        assert {folder: sorted(p.name for p in folder.rglob("*")) for folder in before} == before
        assert (ws.packed / "manifest.json").read_text() == manifest
        assert invoke("test", ws.root, []) == 0
        report = json.loads((ws.root / "reports" / "test_report.json").read_text())
        right[unlabelled] = round(report["sequence_accuracy"] * report["images"])
    assert right["pseudo"] >= right["off"] + 12, right  # 4 % of the 300 test images


def test_synthetic_captchas_are_drawn_in_the_sites_characters_and_size_as_a_split_of_their_own(workspace: Path) -> None:
    data = workspace / "data"
    fill_pool(data / "pool", 50, lengths=(3, 4), seed=1, width=120, height=40)
    assert run_script(workspace, "split_dataset.py").returncode == 0
    with (workspace / "settings.py").open("a") as f:
        f.write("SYNTHETIC = 200\n")
    packed = run_script(workspace, "pack_dataset.py")
    assert packed.returncode == 0, packed.stderr
    manifest = json.loads((workspace / "packed" / "manifest.json").read_text())
    counts = {split: manifest["splits"][split]["count"] for split in ("train", "validation", "test", "synthetic")}
    assert counts == {"train": 40, "validation": 5, "test": 5, "synthetic": 160}, counts  # a split of their own
    assert "synthetic: 160 images drawn in data/synthetic (SYNTHETIC), learnt until the model reads in 1 shard(s)" \
        in packed.stdout
    generated = sorted((data / "synthetic").glob("*.png"))
    assert len(generated) == 160
    from PIL import Image

    assert {Image.open(p).size for p in generated} == {(120, 40)}
    drawn = manifest["splits"]["synthetic"]["labels"]
    assert all(set(label) <= set("0123456789") and 3 <= len(label) <= 4 for label in drawn), drawn
    stamp = generated[0].stat().st_mtime_ns
    assert run_script(workspace, "pack_dataset.py").returncode == 0  # the same drawing: reused
    assert generated[0].stat().st_mtime_ns == stamp
    (data / "synthetic" / "mine.png").write_bytes(generated[1].read_bytes())  # a user's own file there
    with (workspace / "settings.py").open("a") as f:
        f.write("SYNTHETIC = 300\n")  # another drawing is due: the folder would be redrawn
    refused = run_script(workspace, "pack_dataset.py")
    assert refused.returncode != 0 and "data/synthetic/mine.png (and 0 more) in data/synthetic/ were not drawn " \
        "by capforge" in refused.stdout + refused.stderr
    assert len(list((data / "synthetic").glob("*.png"))) == 161  # nothing deleted


def test_drawn_captchas_are_learnt_until_the_model_reads_and_never_after(tmp_path: Path, capsys) -> None:
    from capforge.cli import invoke
    from capforge.settings import load_settings
    from capforge.train import train
    from capforge.workspace import create_workspace

    ws = create_workspace(tmp_path, "site", "CTC_TINY")
    with (ws.root / "settings.py").open("a") as f:
        f.write("IMAGE_HEIGHT = 32\nIMAGE_WIDTH = 96\nCHARSET = '0123456789'\nBATCH_SIZE = 16\nSYNTHETIC = 400\n")
    fill_pool(ws.split_dir("train"), 150, lengths=(4, 4), seed=1)
    fill_pool(ws.split_dir("validation"), 40, lengths=(4, 4), seed=4)
    fill_pool(ws.split_dir("test"), 10, lengths=(4, 4), seed=3)
    assert invoke("pack", ws.root, []) == 0
    summary = train(ws, load_settings(ws.root), minutes=1.0, verbose=0)
    printed = capsys.readouterr().out
    assert "learning from 250 drawn captchas until the model reads (SYNTHETIC)" in printed, printed
    assert "drawn captchas: no longer learnt from epoch" in printed, printed
    assert summary["pseudo_labels"] == 0, summary  # none left in the batches at the end
    assert len(list(ws.synthetic.glob("*.png"))) == 250


def test_a_pack_older_than_a_setting_matches_while_that_setting_is_off(workspace: Path) -> None:
    """A pack made before SYNTHETIC existed does not name it: that is SYNTHETIC = 0, not a change."""
    import pytest

    from capforge.errors import DataError
    from capforge.pack import check_pack_matches, shaping_settings
    from capforge.settings import load_settings
    from capforge.workspace import open_workspace

    ws, settings = open_workspace(workspace), load_settings(workspace)
    older = {key: value for key, value in shaping_settings(ws, settings).items() if key != "SYNTHETIC"}
    check_pack_matches({"shaping": older}, ws, settings)
    with pytest.raises(DataError, match=r"SYNTHETIC \(packed None, now 300\)\. Run pack_dataset\.py again"):
        check_pack_matches({"shaping": older}, ws, load_settings(workspace, ["SYNTHETIC=300"]))
