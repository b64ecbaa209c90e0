"""Visual Genome regions and NLVR2 json lines -> shards."""

from __future__ import annotations

from pathlib import Path

from prep_helpers import corrupt_jpeg, image_bytes, report_counts, truncated_png, write, write_json

from data_prep import convert_nlvr2, convert_vg


def test_visual_genome(tmp_path: Path, read_mds) -> None:
    vg = tmp_path / "vg"
    write(vg / "VG_100K" / "1.jpg", one := image_bytes(20, 10, 1))
    write(vg / "VG_100K_2" / "2.jpg", corrupt_jpeg())
    write(vg / "VG_100K_2" / "3.jpg", three := image_bytes(10, 20, 3))

    def region(image_id: int, phrase) -> dict:
        return {"region_id": image_id * 10, "image_id": image_id, "phrase": phrase, "x": 0, "y": 0,
                "width": 5, "height": 5}

    write_json(tmp_path / "region_descriptions.json", [
        {"id": 1, "regions": [region(1, "a man"), region(1, " "), region(1, "a red hat")]},
        {"id": 2, "regions": [region(2, "corrupt")]},
        {"id": 3, "regions": [region(3, "found without a url")]},
        {"id": 4, "regions": []},
        {"id": 5, "regions": [region(5, "missing file")]},
        "not an entry",
    ])
    write_json(tmp_path / "image_data.json", [
        {"image_id": 1, "url": "https://cs.stanford.edu/people/rak248/VG_100K/1.jpg", "width": 20, "height": 10},
        {"image_id": 2, "url": "https://cs.stanford.edu/people/rak248/VG_100K_2/2.jpg"},
        {"image_id": 5, "url": "https://cs.stanford.edu/people/rak248/VG_100K/5.jpg"},
    ])
    (report,) = convert_vg.main(["--regions", str(tmp_path / "region_descriptions.json"),
                                 "--image-data", str(tmp_path / "image_data.json"), "--images", str(vg),
                                 "--out", str(tmp_path / "out"), "--no-progress"])
    rows = read_mds(tmp_path / "out")
    assert [(r["image_id"], r["captions"]) for r in rows] == [
        ("1", ["a man", "a red hat"]), ("3", ["found without a url"])]
    assert rows[0]["image"] == one and rows[1]["image"] == three
    assert {r["source"] for r in rows} == {"vg"}
    assert report_counts(report) == {"corrupt_image": 1, "no_regions": 1, "missing_image": 1,
                                     "malformed_annotation": 1}
    assert report_counts(report, "dropped") == {"empty_caption": 1}


def test_nlvr2(tmp_path: Path, read_mds) -> None:
    images = tmp_path / "images"
    pngs = {}
    for name in ("train-1-0", "train-2-1"):
        for k in (0, 1):
            pngs[f"{name}-img{k}"] = write(images / "train" / "7" / f"{name}-img{k}.png",
                                           image_bytes(12, 8, len(pngs), "PNG")).read_bytes()
    write(images / "train" / "7" / "train-3-0-img0.png", image_bytes(8, 8, 9, "PNG"))
    write(images / "train" / "7" / "train-3-0-img1.png", truncated_png(3))
    for name in ("dev-1-0", "test1-1-0"):
        split = name.split("-")[0]
        for k in (0, 1):
            pngs[f"{name}-img{k}"] = write(images / split / f"{name}-img{k}.png",
                                           image_bytes(8, 12, len(pngs), "PNG")).read_bytes()
    data = tmp_path / "data"
    write(data / "train.json", "\n".join([
        '{"identifier": "train-1-0-0", "sentence": "One dog.", "label": "True", "directory": 7}',
        '{"identifier": "train-1-0-1", "sentence": "Two dogs.", "label": "False", "directory": 7}',
        '{"identifier": "train-2-1-0", "sentence": "", "label": "True", "directory": 7}',
        '{"identifier": "train-3-0-0", "sentence": "Broken image.", "label": "True", "directory": 7}',
        '{"identifier": "train-4-0-0", "sentence": "No image.", "label": "False", "directory": 7}',
        '{"identifier": "train-2-1-1", "sentence": "Bad label.", "label": "maybe", "directory": 7}',
        '{"identifier": "train-2-1-2", "sentence": "cut off',
    ]) + "\n")
    write(data / "dev.json", '{"identifier": "dev-1-0-0", "sentence": "Dev.", "label": "False"}\n')
    write(data / "test1.json", '{"identifier": "test1-1-0-3", "sentence": "Test.", "label": "True"}\n')
    reports = convert_nlvr2.main(["--data-dir", str(data), "--images", str(images), "--out", str(tmp_path / "out"),
                                  "--no-progress", "--num-workers", "2", "--group-size", "2",
                                  "--max-missing-images", "0.5"])
    train = read_mds(tmp_path / "out" / "train")
    assert [(r["identifier"], r["sentence"], r["label"]) for r in train] == [
        ("train-1-0-0", "One dog.", 1), ("train-1-0-1", "Two dogs.", 0)]
    assert train[0]["image_0"] == pngs["train-1-0-img0"] and train[0]["image_1"] == pngs["train-1-0-img1"]
    assert report_counts(reports[0]) == {"empty_sentence": 1, "corrupt_image": 1, "missing_image": 1,
                                         "bad_label": 1, "malformed_json_line": 1}
    assert reports[0].skipped.reasons["malformed_json_line"].first_ids == ["train.json:7"]
    (dev,) = read_mds(tmp_path / "out" / "dev")
    assert (dev["identifier"], dev["label"], dev["image_1"]) == ("dev-1-0-0", 0, pngs["dev-1-0-img1"])
    (test,) = read_mds(tmp_path / "out" / "test1")
    assert (test["identifier"], test["label"], test["image_0"]) == ("test1-1-0-3", 1, pngs["test1-1-0-img0"])
