"""Every published layout users have on disk converts (sources in published_layouts.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from prep_helpers import dataset_files, image_bytes, report_counts, write, write_json
from published_layouts import Download, img2dataset_webdataset_output
from test_prep_vqa import make_vqa

from data_prep import convert_cc, convert_sbu, convert_vg, convert_vqa, convert_webdataset


def test_sbu_2011_release_text_files(tmp_path: Path, read_mds) -> None:
    urls = write(tmp_path / "SBU_captioned_photo_dataset_urls.txt",
                 "http://static.flickr.com/2723/4385058960_b0f291553e.jpg\n"
                 "http://static.flickr.com/3116/2771630187_1f2d7c7f25.jpg\n"
                 "http://static.flickr.com/2415/2229402283_8db4ae3b38.jpg\n")
    captions = write(tmp_path / "SBU_captioned_photo_dataset_captions.txt",
                     "Man sits in a rusted car buried in the sand on Waitarere beach\n"
                     "Our dog, Mädchen, in the snow \n"
                     "never downloaded\n")
    write(tmp_path / "images" / "0.jpg", zero := image_bytes(8, 8, 0))
    write(tmp_path / "images" / "1.jpg", one := image_bytes(8, 8, 1))
    (report,) = convert_sbu.main(["--urls-txt", str(urls), "--captions-txt", str(captions), "--images",
                                  str(tmp_path / "images"), "--out", str(tmp_path / "out"), "--no-progress"])
    rows = read_mds(tmp_path / "out")
    assert [(r["image_id"], r["captions"], r["image"]) for r in rows] == [
        ("0", ["Man sits in a rusted car buried in the sand on Waitarere beach"], zero),
        ("1", ["Our dog, Mädchen, in the snow"], one)]
    assert report.records == 3 and report_counts(report) == {"missing_image": 1}


def test_visual_genome_with_only_region_descriptions(tmp_path: Path, read_mds) -> None:
    vg = tmp_path / "vg"
    write(vg / "VG_100K" / "1.jpg", one := image_bytes(12, 8, 1))
    write(vg / "VG_100K_2" / "2.jpg", two := image_bytes(8, 12, 2))
    regions = write_json(tmp_path / "region_descriptions.json", [
        {"regions": [{"region_id": 1382, "width": 82, "height": 139, "image_id": 1,
                      "phrase": "the clock is green in colour", "y": 57, "x": 421}], "id": 1},
        {"regions": [{"region_id": 1383, "width": 10, "height": 10, "image_id": 2, "phrase": "a café sign",
                      "y": 0, "x": 0}], "id": 2},
        {"regions": [{"region_id": 1384, "width": 10, "height": 10, "image_id": 3, "phrase": "gone",
                      "y": 0, "x": 0}], "id": 3}])
    (report,) = convert_vg.main(["--regions", str(regions), "--images", str(vg), "--out", str(tmp_path / "out"),
                                 "--no-progress"])
    rows = read_mds(tmp_path / "out")
    assert [(r["image_id"], r["captions"], r["image"]) for r in rows] == [
        ("1", ["the clock is green in colour"], one), ("2", ["a café sign"], two)]
    assert report_counts(report) == {"missing_image": 1}


def test_vqa_under_questions_and_annotations_folders(tmp_path: Path) -> None:
    """GT-Vision-Lab/VQA keeps the files in Questions/ and Annotations/: same shards as flat."""
    make_vqa(tmp_path)
    args = ["--vqa-root", str(tmp_path / "vqa"), "--images", str(tmp_path / "coco"), "--min-answer-count", "2",
            "--no-progress", "--num-workers", "1"]
    convert_vqa.main([*args, "--out", str(tmp_path / "flat")])
    for path in (tmp_path / "vqa").iterdir():
        folder = "Annotations" if path.name.endswith("_annotations.json") else "Questions"
        (tmp_path / "vqa" / folder).mkdir(exist_ok=True)
        shutil.move(path, tmp_path / "vqa" / folder / path.name)
    convert_vqa.main([*args, "--out", str(tmp_path / "nested")])
    flat, nested = dataset_files(tmp_path / "flat"), dataset_files(tmp_path / "nested")
    assert len(flat) > 10 and flat == nested


def test_img2dataset_failures_are_counted_from_parquet_and_stats(tmp_path: Path, read_mds) -> None:
    """Failed rows never reach the tar: the report reads them from the shard's parquet (else stats)."""
    good = [image_bytes(8, 8, i) for i in range(2)]
    img2dataset_webdataset_output(tmp_path / "laion", [
        Download("a café", "http://127.0.0.1/a.jpg", good[0]),
        Download("gone", "http://127.0.0.1/b.jpg", status="failed_to_download",
                 error_message="HTTP Error 404: Not Found"),
        Download("slow", "http://127.0.0.1/c.jpg", status="failed_to_download", error_message="timed out"),
        Download("also gone", "http://127.0.0.1/d.jpg", status="failed_to_download",
                 error_message="HTTP Error 404: Not Found"),
        Download("text", "http://127.0.0.1/e.txt", status="failed_to_resize",
                 error_message="image decoding error"),
        Download("a dog", "http://127.0.0.1/f.jpg", good[1]),
    ])
    (report,) = convert_webdataset.main(["--tars", str(tmp_path / "laion"), "--out", str(tmp_path / "out"),
                                         "--no-progress"])
    assert [(r["image_id"], r["captions"], r["image"]) for r in read_mds(tmp_path / "out")] == [
        ("00000/000000000", ["a café"], good[0]), ("00000/000000005", ["a dog"], good[1])]
    assert report.records == 6 and report.samples_written == 2
    assert report_counts(report) == {"download_failed": 3, "resize_failed": 1}
    failed = report.skipped.reasons["download_failed"]
    assert failed.details == {"HTTP Error 404: Not Found": 2, "timed out": 1}
    assert failed.first_ids[0] == "00000/000000001 (HTTP Error 404: Not Found)"
    assert report.skipped.reasons["resize_failed"].details == {"image decoding error": 1}
    saved = (tmp_path / "out" / "conversion_report.json").read_text(encoding="utf-8")
    assert '"HTTP Error 404: Not Found": 2' in saved

    (tmp_path / "laion" / "00000.parquet").unlink()  # a copy without the parquet: totals from _stats.json
    (report,) = convert_cc.main(["--tars", str(tmp_path / "laion"), "--out", str(tmp_path / "cc"), "--no-progress"])
    assert report.records == 6 and report_counts(report) == {"download_failed": 3, "resize_failed": 1}


def test_writer_import_and_help_load_no_torch() -> None:
    """A converter's start-up and --help must not import torch, transformers, timm (or streaming)."""
    code = ("import sys, data_prep.writer, data_prep.convert_cc, data_prep.convert_vqa, data_prep.make_synthetic; "
            "print(sorted(m for m in ('torch', 'transformers', 'timm', 'streaming') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    helped = subprocess.run([sys.executable, "-m", "data_prep.convert_nlvr2", "--help"], capture_output=True,
                            text=True, timeout=60)
    assert helped.returncode == 0 and "--max-missing-images" in helped.stdout
