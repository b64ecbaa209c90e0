"""The embedded synthetic dataset: deterministic, consistent images and text, balanced tasks."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prep_helpers import dataset_files

from data_prep import make_synthetic
from data_prep.synthetic_scenes import BACKGROUNDS, COLORS, POSITION_X, POSITIONS, captions
from vlmo_composer.data.vqa_answers import answer_targets, answer_vocab_from_json

SIZES = ["--train", "40", "--val", "12", "--test", "12"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "data"
    make_synthetic.main(["--out", str(out), "--seed", "3", *SIZES, "--num-workers", "2", "--group-size", "16",
                         "--no-progress"])
    return out


def test_layout_and_counts(synthetic: Path, read_mds) -> None:
    assert sorted(p.name for p in synthetic.iterdir()) == ["image_text", "images", "nlvr2", "text", "vqa"]
    image_text = read_mds(synthetic / "image_text" / "train")
    assert len(image_text) == 40 and len(read_mds(synthetic / "image_text" / "test")) == 12
    assert all(len(r["captions"]) == 5 and r["source"] == "synthetic" for r in image_text)
    assert {(r["width"], r["height"]) for r in image_text} == {(64, 64)}
    images = read_mds(synthetic / "images" / "train")
    assert [r["image"] for r in images] == [r["image"] for r in image_text]  # the same training images
    assert len(read_mds(synthetic / "vqa" / "train")) == 40 * 4
    test, test_dev = read_mds(synthetic / "vqa" / "test"), read_mds(synthetic / "vqa" / "test-dev")
    assert [r["question_id"] for r in test_dev] == [r["question_id"] for r in test]
    assert all(r["answers"] == r["labels"] == r["scores"] == [] for r in test_dev) and test[0]["answers"]
    assert len(read_mds(synthetic / "nlvr2" / "dev")) == 12
    assert len(read_mds(synthetic / "text" / "train")) == 40


def test_same_seed_same_bytes_other_seed_other_bytes(synthetic: Path, tmp_path: Path) -> None:
    """Same seed: byte-identical datasets (here with 1 worker against the fixture's 2)."""
    common = [*SIZES, "--num-workers", "1", "--group-size", "16", "--no-progress"]
    make_synthetic.main(["--out", str(tmp_path / "same"), "--seed", "3", *common])
    make_synthetic.main(["--out", str(tmp_path / "other"), "--seed", "4", *common])
    for name in ("image_text", "vqa", "nlvr2", "text", "images"):
        assert dataset_files(tmp_path / "same" / name) == dataset_files(synthetic / name), name
        assert dataset_files(tmp_path / "other" / name) != dataset_files(synthetic / name), name


def test_captions_differ_between_images_and_only_in_attributes(synthetic: Path, read_mds) -> None:
    rows = read_mds(synthetic / "image_text" / "train")
    assert len({c for r in rows for c in r["captions"]}) == 5 * len(rows)  # every caption names one image
    # masking the attribute words leaves only a handful of templates
    attributes = {*COLORS, *BACKGROUNDS, "small", "large", "circle", "square", "triangle", "cross",
                  "left", "middle", "right", "one", "two", "three", "shape", "shapes"}
    templates = {" ".join("_" if w.strip(",:") in attributes else w for w in c.split())
                 for r in rows for c in r["captions"]}
    assert len(templates) <= 5 * 3 * 6  # 5 templates x 3 object counts x orderings of 1-3 positions


def test_images_show_what_captions_say(synthetic: Path, read_mds) -> None:
    """Each position's column holds a pixel of the named colour, empty positions only background."""
    scenes = make_synthetic.unique_scenes(3, "train", 40)
    rows = read_mds(synthetic / "image_text" / "train")
    for scene, row in zip(scenes, rows):
        assert row["captions"] == captions(scene)
        pixels = np.asarray(Image.open(io.BytesIO(row["image"])).convert("RGB")).astype(int)
        assert np.abs(pixels[1, 1] - BACKGROUNDS[scene.background]).max() <= 10
        for position in POSITIONS:
            column = pixels[:, int(POSITION_X[position] * 64)]
            shape = scene.at(position)
            target = COLORS[shape.color] if shape else BACKGROUNDS[scene.background]
            distance = np.abs(column - target).max(axis=1)
            assert (distance <= 16).any() if shape else (distance <= 10).all(), (position, row["captions"][0])


def test_vqa_targets_follow_the_vqa_rules(synthetic: Path, read_mds) -> None:
    vocab = answer_vocab_from_json((synthetic / "vqa" / "answer_vocab.json").read_text())
    assert {"yes", "no", "0", "1", "2", "3", "red", "circle", "small", "gray"} <= set(vocab)
    answer_to_label = {a: i for i, a in enumerate(vocab)}
    rows = read_mds(synthetic / "vqa" / "train")
    for r in rows:
        assert len(r["answers"]) == 10
        assert (r["labels"], r["scores"]) == tuple(map(list, answer_targets(r["answers"], answer_to_label)))
    assert len({r["question_id"] for r in rows}) == len(rows)
    assert sum(r["answers"].count(r["answers"][0]) for r in rows) / (10 * len(rows)) > 0.7  # mostly agreeing


def test_nlvr2_is_balanced(synthetic: Path, read_mds) -> None:
    for split in ("train", "dev", "test1"):
        labels = [r["label"] for r in read_mds(synthetic / "nlvr2" / split)]
        assert sorted(set(labels)) == [0, 1] and abs(sum(labels) - len(labels) / 2) <= 0.5
    rows = read_mds(synthetic / "nlvr2" / "train")
    assert all(r["image_0"] != r["image_1"] for r in rows)
