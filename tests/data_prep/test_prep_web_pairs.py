"""img2dataset webdataset tars, the CC tsv and the SBU json -> image-text shards."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest
from prep_helpers import (
    corrupt_jpeg, dataset_files, image_bytes, report_counts, truncated_png, write, write_json, write_tar,
)

from data_prep import convert_cc, convert_sbu, convert_webdataset
from data_prep.common import ConversionError


def meta(key: str, status: str = "success", **extra) -> bytes:
    return json.dumps({"key": key, "status": status, "url": f"http://x/{key}.jpg", **extra}).encode()


def make_tars(root: Path) -> dict[str, bytes]:
    good = {k: image_bytes(16, 12, i) for i, k in enumerate(("a", "b", "c"))}
    write_tar(root / "00000.tar", [
        ("000000.jpg", good["a"]), ("000000.txt", b"a good pair"), ("000000.json", meta("000000")),
        ("000001.json", meta("000001", status="failed_to_download")), ("000001.txt", b"never downloaded"),
        ("000002.jpg", corrupt_jpeg()), ("000002.txt", b"corrupt"), ("000002.json", meta("000002")),
        ("000003.png", truncated_png()), ("000003.txt", b"truncated"),
        ("000004.jpg", good["b"]), ("000004.txt", b"  "),
        ("000005.txt", b"no image"), ("000005.json", meta("000005")),
        ("000006.jpg", good["b"]), ("000006.txt", b"bad meta"), ("000006.json", b"{oops"),
        ("000007.jpg", good["b"]), ("000007.txt", b"\xff\xfe not utf-8"),
    ])
    write_tar(root / "00001.tar", [("000010.jpg", good["c"]),
                                   ("000010.json", meta("000010", caption="caption in json"))])
    full = write_tar(root / "whole.tar", [("000020.jpg", good["a"]), ("000020.txt", b"kept before the damage"),
                                          ("000021.jpg", image_bytes(64, 64, 9)), ("000021.txt", b"lost")])
    with tarfile.open(full) as tar:
        cut = tar.getmember("000021.jpg").offset_data + 100
    data = full.read_bytes()
    full.unlink()
    write(root / "00002.tar", data[:cut])  # cut inside the second sample's image
    return good


def test_webdataset_tars(tmp_path: Path, read_mds) -> None:
    good = make_tars(tmp_path / "tars")
    out = tmp_path / "out"
    (report,) = convert_webdataset.main(["--tars", str(tmp_path / "tars"), "--source", "laion",
                                         "--out", str(out), "--no-progress", "--num-workers", "1"])
    rows = read_mds(out)
    assert [(r["image_id"], r["captions"]) for r in rows] == [
        ("00000/000000", ["a good pair"]),
        ("00001/000010", ["caption in json"]),
        ("00002/000020", ["kept before the damage"]),
    ]
    assert rows[0]["image"] == good["a"] and rows[1]["image"] == good["c"]
    assert {r["source"] for r in rows} == {"laion"}
    assert report_counts(report) == {
        "download_failed": 1, "corrupt_image": 2, "empty_caption": 1, "missing_image": 1,
        "malformed_json": 1, "non_text_caption": 1, "truncated_tar": 1, "truncated_member": 1,
    }
    assert report.skipped.reasons["download_failed"].first_ids == ["00000/000001 (failed_to_download)"]
    assert report.skipped.reasons["truncated_tar"].first_ids[0].startswith("00002.tar")
    assert report.records == 12 and report.samples_written == 3  # 11 keys + the damaged tar


def test_cc_tars_use_the_same_reader(tmp_path: Path, read_mds) -> None:
    make_tars(tmp_path / "tars")
    out = tmp_path / "out"
    convert_cc.main(["--variant", "cc12m", "--tars", str(tmp_path / "tars" / "0000[01].tar"), "--split", "train",
                     "--out", str(out), "--no-progress"])
    rows = read_mds(out / "train")
    assert [r["image_id"] for r in rows] == ["00000/000000", "00001/000010"]
    assert {r["source"] for r in rows} == {"cc12m"}


def test_cc_tsv_with_downloaded_folder(tmp_path: Path, read_mds) -> None:
    tsv = write(tmp_path / "cc.tsv", "\n".join([
        "a red car\thttp://x/0.jpg",
        "no tab on this line",
        "\thttp://x/2.jpg",
        "",  # no row: the rows after it keep their numbers
        "a missing image\thttp://x/3.jpg",
        "a corrupt image\thttp://x/4.jpg",
        "a nested image\thttp://x/5.jpg",
    ]) + "\n")
    images = tmp_path / "images"
    write(images / "0.jpg", first := image_bytes(8, 8, 0))
    write(images / "00000" / "000000002.jpg", image_bytes(8, 8, 2))
    write(images / "4.jpg", corrupt_jpeg())
    write(images / "00000" / "000000005.jpg", nested := image_bytes(9, 7, 5))
    argv = ["--tsv", str(tsv), "--images", str(images), "--no-progress"]
    (report,) = convert_cc.main([*argv, "--out", str(tmp_path / "out")])
    rows = read_mds(tmp_path / "out")
    assert [(r["image_id"], r["captions"], r["source"]) for r in rows] == [
        ("0", ["a red car"], "cc3m"), ("5", ["a nested image"], "cc3m")]
    assert rows[0]["image"] == first and rows[1]["image"] == nested
    assert (rows[1]["width"], rows[1]["height"]) == (9, 7)
    assert report_counts(report) == {"malformed_tsv_line": 2, "empty_caption": 1, "missing_image": 1,
                                     "corrupt_image": 1}
    assert report.skipped.reasons["malformed_tsv_line"].first_ids == ["cc.tsv:2", "cc.tsv:4"]
    assert report.groups == 1 and report.records == 7

    # ranges of >= 30 bytes, cut at the next line end: the same rows, ids and report from 4 groups
    (ranged,) = convert_cc.main([*argv, "--out", str(tmp_path / "ranged"), "--range-size", "30",
                                 "--num-workers", "2"])
    assert read_mds(tmp_path / "ranged") == rows
    assert ranged.groups == 4 and ranged.skipped == report.skipped and ranged.records == report.records


def test_cc12m_column_order(tmp_path: Path, read_mds) -> None:
    tsv = write(tmp_path / "cc12m.tsv", "http://x/0.jpg\ta caption after the url\n")
    write(tmp_path / "images" / "0.jpg", image_bytes(8, 8, 0))
    convert_cc.main(["--variant", "cc12m", "--tsv", str(tsv), "--tsv-columns", "url,caption",
                     "--images", str(tmp_path / "images"), "--out", str(tmp_path / "out"), "--no-progress"])
    assert [r["captions"] for r in read_mds(tmp_path / "out")] == [["a caption after the url"]]


def test_sbu_json_with_downloaded_folder(tmp_path: Path, read_mds) -> None:
    sbu = write_json(tmp_path / "sbu.json", {
        "image_urls": ["http://static.flickr.com/1/abc_1.jpg", "http://static.flickr.com/2/def_2.jpg",
                       "http://static.flickr.com/3/ghi_3.jpg"],
        "captions": ["Named by url.", "Named by row.", "Never downloaded."],
        "user_ids": ["u1", "u2", "u3"],
    })
    write(tmp_path / "images" / "abc_1.jpg", image_bytes(8, 8, 0))
    write(tmp_path / "images" / "1.jpg", image_bytes(8, 8, 1))
    (report,) = convert_sbu.main(["--json", str(sbu), "--images", str(tmp_path / "images"),
                                  "--out", str(tmp_path / "out"), "--no-progress"])
    rows = read_mds(tmp_path / "out")
    # a url's file name never pairs a download with a row (test_prep_pairing.py says why)
    assert [(r["image_id"], r["captions"], r["source"]) for r in rows] == [("1", ["Named by row."], "sbu")]
    assert report_counts(report) == {"missing_image": 2}
    # one group per --range-size of json, each worker keeping its share of the rows: the same output
    (sliced,) = convert_sbu.main(["--json", str(sbu), "--images", str(tmp_path / "images"), "--range-size", "100",
                                  "--out", str(tmp_path / "sliced"), "--no-progress", "--num-workers", "2"])
    assert sliced.groups == 3 and report.groups == 1
    assert read_mds(tmp_path / "sliced") == rows and sliced.skipped == report.skipped


def test_sbu_json_with_unequal_lists_is_fatal(tmp_path: Path) -> None:
    sbu = write_json(tmp_path / "sbu.json", {"image_urls": ["a", "b"], "captions": ["x"], "user_ids": []})
    (tmp_path / "images").mkdir()
    with pytest.raises(ConversionError, match="2 image_urls but 1 captions"):
        convert_sbu.main(["--json", str(sbu), "--images", str(tmp_path / "images"), "--out", str(tmp_path / "o")])


def small_tars(root: Path, count: int, caption: bytes = b"a caption") -> None:
    for t in range(count):
        write_tar(root / f"{t:05d}.tar", [(f"{t}{k}.jpg", image_bytes(8, 8, t * 10 + k)) for k in range(2)]
                  + [(f"{t}{k}.txt", caption) for k in range(2)])


def test_webdataset_plan_is_per_tar_and_reads_no_tar(tmp_path: Path, monkeypatch) -> None:
    small_tars(tmp_path / "tars", 4)

    def no_reading(*args, **kwargs):
        raise AssertionError("the driver opened a tar while planning")

    monkeypatch.setattr(tarfile, "open", no_reading)
    args = convert_webdataset.build_parser().parse_args(["--tars", str(tmp_path / "tars"), "--out", "unused"])
    (job,) = convert_webdataset.plan(args)
    assert job.records == [] and [Path(s.name).name for s in job.sources] == [f"{t:05d}.tar" for t in range(4)]


def test_webdataset_changed_tar_redoes_only_its_group(tmp_path: Path, read_mds) -> None:
    small_tars(tmp_path / "tars", 3)
    out = tmp_path / "out"
    argv = ["--tars", str(tmp_path / "tars"), "--out", str(out), "--no-progress", "--num-workers", "1"]
    (first,) = convert_webdataset.main(argv)
    assert first.groups == 3 and first.samples_written == 6 and first.records == 6
    stamps = {g: (out / g / "_SUCCESS").stat().st_mtime_ns for g in ("00000", "00001", "00002")}
    write_tar(tmp_path / "tars" / "00001.tar", [("10.jpg", image_bytes(8, 8, 99)), ("10.txt", b"changed")])
    (again,) = convert_webdataset.main(argv)
    assert not again.already_complete and again.groups_resumed == 2
    assert again.records == again.samples_written == 5
    assert {g: (out / g / "_SUCCESS").stat().st_mtime_ns for g in stamps} == {
        **stamps, "00001": (out / "00001" / "_SUCCESS").stat().st_mtime_ns}
    assert (out / "00001" / "_SUCCESS").stat().st_mtime_ns != stamps["00001"]
    assert [r["captions"] for r in read_mds(out)] == [["a caption"]] * 2 + [["changed"]] + [["a caption"]] * 2
    assert os.path.exists(out / "conversion_report.json")
    (third,) = convert_webdataset.main(argv)
    assert third.already_complete


def test_cc_tsv_plan_reads_no_image_and_resumes_by_range(tmp_path: Path, read_mds, monkeypatch) -> None:
    """The driver plans byte ranges of the tsv (no row kept, no image listed); a killed run keeps its
    finished ranges; an edited line redoes only its range's group."""
    lines = [f"caption {i}\thttp://x/{i}.jpg" for i in range(6)]
    tsv = write(tmp_path / "cc.tsv", "\n".join(lines) + "\n")
    for i in range(6):
        write(tmp_path / "images" / "00000" / f"{i:09d}.jpg", image_bytes(8, 8, i))
    out = tmp_path / "out"
    argv = ["--tsv", str(tsv), "--images", str(tmp_path / "images"), "--out", str(out), "--range-size", "40",
            "--no-progress", "--num-workers", "1"]
    with monkeypatch.context() as m:
        m.setattr(os, "walk", lambda *a, **k: (_ for _ in ()).throw(AssertionError("the driver listed images")))
        (job,) = convert_cc.plan(convert_cc.build_parser().parse_args(argv))
    assert job.records == [] and [(s.rows.range.first_row, s.rows.range.rows) for s in job.sources] == [
        (0, 2), (2, 2), (4, 2)]

    (first,) = convert_cc.main(argv)
    assert first.groups == 3 and first.samples_written == 6
    reference = dataset_files(out)
    # what a kill leaves: finished groups, one unfinished (no _SUCCESS), no merged index, no report
    for name in ("00001/_SUCCESS", "index.json", "conversion_report.json"):
        (out / name).unlink()
    (resumed,) = convert_cc.main(argv)
    assert resumed.groups_resumed == 2 and dataset_files(out) == reference

    stamps = {g: (out / g / "_SUCCESS").stat().st_mtime_ns for g in ("00000", "00001", "00002")}
    tsv.write_text(tsv.read_text().replace("caption 3", "edited  3"))  # same length: ranges keep their bytes
    (edited,) = convert_cc.main(argv)
    assert not edited.already_complete and edited.groups_resumed == 2
    assert [g for g in stamps if (out / g / "_SUCCESS").stat().st_mtime_ns != stamps[g]] == ["00001"]
    assert [r["captions"] for r in read_mds(out)] == [[f"caption {i}"] for i in range(3)] + [["edited 3"]] + [
        [f"caption {i}"] for i in range(4, 6)]
