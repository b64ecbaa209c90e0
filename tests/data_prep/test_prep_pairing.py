"""Captioned url lists next to downloaded images: every image gets its own row's caption, or none.

Layouts come from ``published_layouts.py`` (img2dataset's CC3M recipe and writers, the SBU json).
"""

from __future__ import annotations

from pathlib import Path

from prep_helpers import image_bytes, report_counts, write, write_json
from published_layouts import Download, cc3m_in_shards, cc3m_tsv, img2dataset_files_output

from data_prep import convert_cc, convert_sbu, downloaded

ROWS = [("a red car on a bridge", "http://img.example/a/1.jpg"),
        ("un café à Paris, 東京", "http://img.example/b/1.jpg"),
        ("a dog in the snow", "http://img.example/c/image.jpg")]


def pairs(rows: list[dict]) -> list[tuple[str, list[str], bytes]]:
    return [(r["image_id"], r["captions"], r["image"]) for r in rows]


def test_cc3m_tsv_with_the_recipe_header_pairs_each_image_with_its_own_caption(tmp_path: Path, read_mds) -> None:
    """img2dataset's recipe adds ``caption<TAB>url``; its keys count data rows, not the header."""
    images = [image_bytes(8, 8, i) for i in range(3)]
    downloads = [Download(c, u, img) for (c, u), img in zip(ROWS, images)]
    img2dataset_files_output(tmp_path / "cc3m", downloads)
    tsv = cc3m_tsv(tmp_path / "cc3m.tsv", ROWS, recipe_header=True)
    (report,) = convert_cc.main(["--tsv", str(tsv), "--images", str(tmp_path / "cc3m"),
                                 "--out", str(tmp_path / "out"), "--no-progress"])
    assert pairs(read_mds(tmp_path / "out")) == [
        ("0", ["a red car on a bridge"], images[0]),
        ("1", ["un café à Paris, 東京"], images[1]),
        ("2", ["a dog in the snow"], images[2])]
    assert report.records == 3 and report_counts(report) == {}


def test_cc12m_header_gives_the_column_order(tmp_path: Path, read_mds) -> None:
    """cc12m.md adds ``url<TAB>caption``: the header, not ``--tsv-columns``, decides."""
    tsv = write(tmp_path / "cc12m.tsv", "url\tcaption\nhttp://img.example/x.jpg\ta kite\n")
    write(tmp_path / "images" / "0.jpg", img := image_bytes(8, 8, 0))
    convert_cc.main(["--variant", "cc12m", "--tsv", str(tsv), "--images", str(tmp_path / "images"),
                     "--out", str(tmp_path / "out"), "--no-progress"])
    assert pairs(read_mds(tmp_path / "out")) == [("0", ["a kite"], img)]


def test_url_file_name_never_pairs_a_row_with_another_rows_download(tmp_path: Path, read_mds) -> None:
    """Many urls end in ``1.jpg``: a row without its own download must not take row 1's file."""
    urls = ["http://static.flickr.com/1/1.jpg", "http://static.flickr.com/2/1.jpg",
            "http://static.flickr.com/3/1.jpg", "http://static.flickr.com/4/image.jpg"]
    sbu = write_json(tmp_path / "sbu-captions-all.json", {
        "image_urls": urls, "captions": ["first", "second", "third: never downloaded", "fourth"],
        "user_ids": ["u0", "u1", "u2", "u3"]})
    images = tmp_path / "images"  # a downloader that names files by row
    write(images / "0.jpg", zero := image_bytes(8, 8, 0))
    write(images / "1.jpg", one := image_bytes(8, 8, 1))
    write(images / "image.jpg", image_bytes(8, 8, 9))  # some other download's url name
    (report,) = convert_sbu.main(["--json", str(sbu), "--images", str(images), "--out", str(tmp_path / "out"),
                                  "--no-progress"])
    assert pairs(read_mds(tmp_path / "out")) == [("0", ["first"], zero), ("1", ["second"], one)]
    assert report_counts(report) == {"missing_image": 2}
    assert [i.split(" ")[0] for i in report.skipped.reasons["missing_image"].first_ids] == ["2", "3"]


def test_download_json_confirms_the_row(tmp_path: Path, read_mds) -> None:
    """A download whose ``.json`` names another url or caption is not this row's image."""
    images = [image_bytes(8, 8, i) for i in range(5)]
    rows = ROWS + [("a boat", "http://img.example/d/2.jpg"), ("a tree", "http://img.example/e/3.jpg")]
    downloaded = [Download(c, u, img) for (c, u), img in zip(rows, images)]
    downloaded[1].url = "http://img.example/other.jpg"  # row 1's key holds another url
    downloaded[2].caption = "a cat in the snow"  # same url, other caption
    downloaded[4] = Download(rows[4][0], rows[4][1], status="failed_to_download",
                             error_message="HTTP Error 404: Not Found")
    img2dataset_files_output(tmp_path / "dl", downloaded)
    write(tmp_path / "dl" / "3.jpg", image_bytes(8, 8, 7))  # a second file claiming row 3
    tsv = cc3m_tsv(tmp_path / "cc3m.tsv", rows, recipe_header=False)
    (report,) = convert_cc.main(["--tsv", str(tsv), "--images", str(tmp_path / "dl"), "--out", str(tmp_path / "out"),
                                 "--no-progress"])
    assert pairs(read_mds(tmp_path / "out")) == [("0", ["a red car on a bridge"], images[0])]
    assert report_counts(report) == {"url_mismatch": 1, "caption_mismatch": 1, "ambiguous_image": 1,
                                     "download_failed": 1}
    assert report.skipped.reasons["url_mismatch"].first_ids[0].startswith("1 ")
    assert report.skipped.reasons["download_failed"].details == {"HTTP Error 404: Not Found": 1}
    assert report.records == 5


def test_img2dataset_shard_folders_a_group_lists_only_its_own(tmp_path: Path, read_mds) -> None:
    """At CC3M scale a group must not list every download: in img2dataset's layout the group of rows
    [a, b) lists only the shard folders that hold those keys (``00001/000010..000019`` for 10 rows per
    shard) and reads only their parquets; what it finds is what a full listing keeps of [a, b)."""
    root = tmp_path / "dl"
    rows, images = cc3m_in_shards(root)
    layout = downloaded.shard_folders(str(root))
    assert layout == downloaded.ShardFolders(("00000", "00001", "00002"), 10)
    full = downloaded.index_downloads(str(root))  # no span: the whole folder, as every group read it before
    for span in (range(0, 7), range(7, 19), range(19, 30), range(12, 13)):
        assert downloaded.index_downloads(str(root), span, layout) == {r: p for r, p in full.items() if r in span}
    tsv = cc3m_tsv(tmp_path / "cc3m.tsv", rows, recipe_header=False)
    argv = ["--tsv", str(tsv), "--images", str(root), "--no-progress", "--num-workers", "2"]
    (whole,) = convert_cc.main([*argv, "--out", str(tmp_path / "whole")])

    # decoys no group of rows 0-19 may see: a file claiming row 3 in shard 2's folder, a parquet of
    # shard 3 saying row 17 failed; listed, they would make 3 ambiguous_image and 17 download_failed
    write(root / "00002" / "000003.jpg", images[3])
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"key": ["000017"], "url": [rows[17][1]], "status": ["failed_to_download"],
                             "error_message": ["decoy"]}), root / "00003.parquet")
    (grouped,) = convert_cc.main([*argv, "--out", str(tmp_path / "grouped"), "--range-size", "100"])
    assert grouped.groups == 10 and whole.groups == 1
    assert read_mds(tmp_path / "grouped") == read_mds(tmp_path / "whole")
    assert [r["image_id"] for r in read_mds(tmp_path / "grouped")] == [
        str(i) for i in range(30) if i not in (4, 13, 17, 22, 25)]
    assert report_counts(grouped) == report_counts(whole) == {
        "download_failed": 2, "url_mismatch": 1, "missing_image": 1, "ambiguous_image": 1}
    assert grouped.skipped.reasons["download_failed"].details == {"HTTP Error 404: Not Found": 1, "timed out": 1}
