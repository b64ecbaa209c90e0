"""NLVR2 as published: lil-lab/nlvr json lines and the image zips unpacked (see published_layouts.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from prep_helpers import image_bytes, report_counts, write
from published_layouts import nlvr2_line

from data_prep import convert_nlvr2
from data_prep.common import ConversionError


def unpack_images(root: Path, pairs: dict[str, str]) -> dict[str, bytes]:
    """``images/train/<dir>/`` from train_img.zip, ``dev/``, ``test1/``, ``test2/`` beside it."""
    written = {}
    for pair, folder in pairs.items():
        for k in (0, 1):
            name = f"{pair}-img{k}.png"
            written[name] = write(root / folder / name, image_bytes(8, 6, len(written), "PNG")).read_bytes()
    return written


def make_nlvr2(tmp_path: Path) -> tuple[Path, Path, dict[str, bytes]]:
    data = tmp_path / "nlvr" / "nlvr2" / "data"
    write(data / "train.json", "\n".join([
        nlvr2_line("train-10108-0-0", "Two dogs pull a sled.", "True", directory=0),
        nlvr2_line("train-10108-0-1", "Exactly one image shows a café.", "False", directory=0),
        nlvr2_line("train-10056-2-0", "A panda sits near a fallen branch.", "True", directory=1),
    ]) + "\n")
    write(data / "dev.json", nlvr2_line("dev-850-0-0", "The right image shows a walkway.", "False") + "\n")
    write(data / "test1.json", nlvr2_line("test1-7-1-1", "All the bottles are brown.", "True") + "\n")
    write(data / "test2.json", nlvr2_line("test2-189-0-0", "All the bottles are from the same brand.",
                                          "True") + "\n")
    images = unpack_images(tmp_path / "nlvr2_images", {
        "train-10108-0": "images/train/0", "train-10056-2": "images/train/1", "dev-850-0": "dev",
        "test1-7-1": "test1", "test2-189-0": "test2"})
    return data, tmp_path / "nlvr2_images", images


def test_published_layout_converts_every_split(tmp_path: Path, read_mds) -> None:
    data, root, images = make_nlvr2(tmp_path)
    reports = convert_nlvr2.main(["--data-dir", str(data), "--images", str(root), "--out", str(tmp_path / "out"),
                                  "--no-progress"])
    assert [(r.split, r.samples_written, report_counts(r)) for r in reports] == [
        ("train", 3, {}), ("dev", 1, {}), ("test1", 1, {}), ("test2", 1, {})]
    train = read_mds(tmp_path / "out" / "train")
    assert [(r["identifier"], r["sentence"], r["label"]) for r in train] == [
        ("train-10108-0-0", "Two dogs pull a sled.", 1),
        ("train-10108-0-1", "Exactly one image shows a café.", 0),
        ("train-10056-2-0", "A panda sits near a fallen branch.", 1)]
    assert train[2]["image_0"] == images["train-10056-2-img0.png"]
    assert train[2]["image_1"] == images["train-10056-2-img1.png"]
    (test2,) = read_mds(tmp_path / "out" / "test2")
    assert (test2["identifier"], test2["label"], test2["image_1"]) == (
        "test2-189-0-0", 1, images["test2-189-0-img1.png"])


def test_a_split_that_loses_its_images_fails_with_the_count(tmp_path: Path) -> None:
    data, root, _ = make_nlvr2(tmp_path)
    for png in (root / "images" / "train" / "1").iterdir():
        png.unlink()  # 1 of 3 train examples has no images: 33% > the default 10%
    with pytest.raises(ConversionError, match=r"train: 1 of 3 examples \(33%\) have no image pair"):
        convert_nlvr2.main(["--data-dir", str(data), "--images", str(root), "--out", str(tmp_path / "out"),
                            "--no-progress"])
    assert not (tmp_path / "out").exists()
    (train, *_) = convert_nlvr2.main(["--data-dir", str(data), "--images", str(root), "--out",
                                      str(tmp_path / "out"), "--no-progress", "--max-missing-images", "0.5"])
    assert train.samples_written == 2 and report_counts(train) == {"missing_image": 1}


def test_test2_json_without_its_images_converts_the_rest_and_names_splits(tmp_path: Path, read_mds, capsys) -> None:
    """The lil-lab clone ships test2.json; most users unzip only the train, dev and test1 images."""
    data, root, _ = make_nlvr2(tmp_path)
    shutil.rmtree(root / "test2")
    reports = convert_nlvr2.main(["--data-dir", str(data), "--images", str(root), "--out", str(tmp_path / "out"),
                                  "--no-progress"])
    assert [(r.split, r.samples_written) for r in reports] == [("train", 3), ("dev", 1), ("test1", 1)]
    assert not (tmp_path / "out" / "test2").exists()
    (note,) = [line for line in capsys.readouterr().err.splitlines() if "test2" in line]
    assert "test2.json" in note and "--splits train dev test1" in note, note
    # Asked for by name, a split must have its images; with none anywhere, --images is wrong.
    with pytest.raises(ConversionError, match=r"test2: 1 of 1 examples \(100%\) have no image pair"):
        convert_nlvr2.main(["--data-dir", str(data), "--images", str(root), "--out", str(tmp_path / "named"),
                            "--no-progress", "--splits", "test1", "test2"])
    with pytest.raises(ConversionError, match=r"train: 3 of 3 examples"):
        convert_nlvr2.main(["--data-dir", str(data), "--images", str(tmp_path), "--out", str(tmp_path / "wrong"),
                            "--no-progress"])
