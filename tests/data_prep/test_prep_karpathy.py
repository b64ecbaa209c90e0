"""COCO / Flickr30K Karpathy json -> image-text shards, with every kind of bad record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prep_helpers import corrupt_jpeg, decoded_size, image_bytes, report_counts, truncated_png, write, write_json

from data_prep import convert_karpathy
from data_prep.common import ConversionError


def make_coco(root: Path) -> dict:
    """Eight COCO images: four good ones and four bad ones, over all Karpathy splits."""
    images = {}
    entries = []

    def add(cocoid: int, split: str, captions: list, data: bytes | None, folder: str = "val2014") -> None:
        name = f"COCO_{folder}_{cocoid:012d}.jpg"
        if data is not None:
            write(root / "coco" / folder / name, data)
            images[str(cocoid)] = data
        entries.append({"filepath": folder, "filename": name, "split": split, "cocoid": cocoid,
                        "sentences": [{"raw": c} for c in captions]})

    add(1, "train", ["A dog runs.", "  a   brown dog  "], image_bytes(40, 30, 1), "train2014")
    add(2, "restval", ["A cat.", "", "A sleeping cat."], image_bytes(30, 40, 2))
    add(3, "val", ["Two birds.", 5], image_bytes(20, 20, 3))
    add(4, "test", ["A boat."], image_bytes(24, 16, 4))
    add(5, "train", ["Corrupt."], corrupt_jpeg(), "train2014")
    add(6, "train", ["Truncated."], truncated_png(6), "train2014")
    add(7, "val", ["Missing."], None)
    add(8, "test", ["", "   "], image_bytes(10, 10, 8))
    write_json(root / "dataset_coco.json", {"images": entries, "dataset": "coco"})
    return images


def test_coco_splits_captions_and_bad_records(tmp_path: Path, read_mds) -> None:
    images = make_coco(tmp_path)
    out = tmp_path / "out"
    reports = convert_karpathy.main(["--dataset", "coco", "--json", str(tmp_path / "dataset_coco.json"),
                                     "--images", str(tmp_path / "coco"), "--out", str(out),
                                     "--num-workers", "1", "--no-progress"])
    by_split = {r.split: r for r in reports}

    train = read_mds(out / "train")
    assert [s["image_id"] for s in train] == ["1", "2"]  # restval goes to train
    assert train[0]["captions"] == ["A dog runs.", "a brown dog"]
    assert train[1]["captions"] == ["A cat.", "A sleeping cat."]
    assert all(s["source"] == "coco" for s in train)
    assert train[0]["image"] == images["1"]  # original bytes kept
    assert (train[0]["width"], train[0]["height"]) == (40, 30)
    assert report_counts(by_split["train"]) == {"corrupt_image": 2}
    assert by_split["train"].skipped.reasons["corrupt_image"].first_ids[0].startswith("5")
    assert report_counts(by_split["train"], "dropped") == {"empty_caption": 1}
    assert by_split["train"].dropped.reasons["empty_caption"].first_ids == ["2#1"]

    val = read_mds(out / "val")
    assert [(s["image_id"], s["captions"]) for s in val] == [("3", ["Two birds."])]
    assert report_counts(by_split["val"]) == {"missing_image": 1}
    assert report_counts(by_split["val"], "dropped") == {"non_text_caption": 1}

    test = read_mds(out / "test")
    assert [s["image_id"] for s in test] == ["4"]
    assert report_counts(by_split["test"]) == {"empty_caption": 1}  # every caption of image 8 empty
    assert [r.samples_written for r in reports] == [2, 1, 1]
    assert [r.records for r in reports] == [4, 2, 2]

    saved = (out / "train" / "conversion_report.json").read_text()
    assert '"corrupt_image"' in saved and '"count": 2' in saved


def test_f30k_layout_and_resize(tmp_path: Path, read_mds) -> None:
    write(tmp_path / "f30k" / "100.jpg", image_bytes(80, 40, 0))
    write(tmp_path / "f30k" / "200.jpg", small := image_bytes(20, 30, 1))
    entries = [{"filename": "100.jpg", "split": "train", "imgid": 0, "sentences": [{"raw": "wide"}]},
               {"filename": "200.jpg", "split": "test", "imgid": 1, "sentences": [{"raw": "small"}]}]
    write_json(tmp_path / "dataset_flickr30k.json", {"images": entries})
    out = tmp_path / "out"
    convert_karpathy.main(["--dataset", "f30k", "--json", str(tmp_path / "dataset_flickr30k.json"),
                           "--images", str(tmp_path / "f30k"), "--out", str(out), "--max-image-side", "32",
                           "--no-progress"])
    (wide,) = read_mds(out / "train")
    assert wide["image_id"] == "100" and wide["source"] == "f30k"
    assert (wide["width"], wide["height"]) == (32, 16) == decoded_size(wide["image"])
    assert wide["image"][:2] == b"\xff\xd8"  # re-encoded as JPEG
    (kept,) = read_mds(out / "test")
    assert kept["image"] == small  # not larger than the limit: original bytes
    assert json.loads((out / "val" / "index.json").read_text())["shards"] == []  # an empty split


def test_missing_annotation_file_is_fatal(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="not found: .*nope.json"):
        convert_karpathy.main(["--dataset", "coco", "--json", str(tmp_path / "nope.json"),
                               "--images", str(tmp_path), "--out", str(tmp_path / "out")])
    write(tmp_path / "broken.json", "{not json")
    with pytest.raises(ConversionError, match="cannot read .*broken.json"):
        convert_karpathy.main(["--dataset", "coco", "--json", str(tmp_path / "broken.json"),
                               "--images", str(tmp_path), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
