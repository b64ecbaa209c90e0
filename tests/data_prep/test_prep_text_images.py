"""Text corpora -> text shards; image folders -> image-only shards."""

from __future__ import annotations

import json
from pathlib import Path

from prep_helpers import corrupt_jpeg, dataset_files, image_bytes, report_counts, truncated_png, write

from data_prep import convert_images, convert_text
from data_prep.convert_text import chunk_text
from data_prep.line_ranges import plan_ranges, read_range


def test_chunk_text_keeps_sentences_whole() -> None:
    text = "One two three. Four five six! Seven eight nine? Ten."
    assert chunk_text(text, 100) == [text]
    assert chunk_text(text, 30) == ["One two three. Four five six!", "Seven eight nine? Ten."]
    assert chunk_text(text, 15) == ["One two three.", "Four five six!", "Seven eight", "nine? Ten."]
    assert all(len(p) <= 8 for p in chunk_text("abcdefghijklmnop qr. st", 8))


def test_ranges_give_every_line_to_exactly_one_range(tmp_path: Path) -> None:
    lines = [b"caption\turl\n", b"short\n", b"\n", b"a line much longer than any range here\r\n", b"x\n",
             b"  \n", b"\n", b"no newline at the end"]
    path = write(tmp_path / "f.tsv", b"".join(lines))
    whole = list(enumerate(lines, start=1))
    for size in (1, 3, 7, 12, 40, 1000):
        ranges = plan_ranges(str(path), size, header_lines=1)
        assert [r.start for r in ranges[1:]] == [r.end for r in ranges[:-1]]  # contiguous, cut at line ends
        assert ranges[0].start == 0 and ranges[-1].end == path.stat().st_size
        assert [x for r in ranges for x in read_range(r)] == whole  # numbered as in the whole file
        assert [r.first_row for r in ranges] == [sum(r.rows for r in ranges[:i]) for i in range(len(ranges))]
        assert sum(r.rows for r in ranges) == 5  # lines after the header, but for the empty ones
    assert len(plan_ranges(str(path), 1)) == len(lines)
    paragraphs = plan_ranges(str(path), 1, cut_after=lambda line: not line.strip())
    assert [r.first_line for r in paragraphs] == [1, 4, 7, 8]  # cut only after blank lines


def test_text_paragraphs_jsonl_and_bad_lines(tmp_path: Path, read_mds) -> None:
    write(tmp_path / "corpus" / "a_book.txt", "First paragraph,\nsame paragraph.\n\n\nSecond one. It is long enough "
                                            "to be split here. Yes.\n   \nThird.\n")
    write(tmp_path / "corpus" / "b_wiki.jsonl", "\n".join([
        json.dumps({"text": "Wiki doc one.\n\nWiki paragraph two."}),
        "{broken json",
        json.dumps({"text": ""}),
        json.dumps({"text": 42}),
        json.dumps({"title": "no text"}),
        json.dumps({"text": "Last doc."}),
    ]) + "\n")
    (report,) = convert_text.main(["--inputs", str(tmp_path / "corpus"), "--unit", "paragraph", "--max-chars", "38",
                                   "--split", "train", "--out", str(tmp_path / "out"), "--no-progress"])
    rows = [r["text"] for r in read_mds(tmp_path / "out" / "train")]
    assert rows == ["First paragraph, same paragraph.", "Second one.", "It is long enough to be split here.",
                    "Yes.", "Third.", "Wiki doc one.", "Wiki paragraph two.", "Last doc."]
    assert report_counts(report) == {"malformed_json_line": 1, "empty_document": 1, "non_text_document": 2}
    assert report.skipped.reasons["malformed_json_line"].first_ids == ["b_wiki.jsonl:2"]
    assert report.groups == 2  # one range per file at the default --range-size

    # a range of a few bytes: a group per paragraph / json line, numbered and ordered as before,
    # for one worker or two (same bytes)
    tiny = [["--range-size", "7", "--num-workers", str(n)] for n in (1, 2)]
    for n, extra in enumerate(tiny):
        (small,) = convert_text.main(["--inputs", str(tmp_path / "corpus"), "--unit", "paragraph", "--max-chars",
                                      "38", "--out", str(tmp_path / f"tiny{n}"), "--no-progress", *extra])
        assert [r["text"] for r in read_mds(tmp_path / f"tiny{n}")] == rows
        assert small.skipped == report.skipped and small.groups == 3 + 6 and small.samples_written == len(rows)
    assert dataset_files(tmp_path / "tiny0") == dataset_files(tmp_path / "tiny1")


def test_text_lines_and_documents(tmp_path: Path, read_mds) -> None:
    corpus = write(tmp_path / "wikibk.0.txt", "sentence one.\nsentence two.\n\nsentence three.\n")
    convert_text.main(["--inputs", str(corpus), "--unit", "line", "--out", str(tmp_path / "lines"), "--no-progress"])
    assert [r["text"] for r in read_mds(tmp_path / "lines")] == ["sentence one.", "sentence two.", "sentence three."]
    convert_text.main(["--inputs", str(corpus), "--unit", "document", "--out", str(tmp_path / "docs"), "--no-progress"])
    assert [r["text"] for r in read_mds(tmp_path / "docs")] == ["sentence one. sentence two. sentence three."]


def test_image_folders_with_and_without_classes(tmp_path: Path, read_mds) -> None:
    root = tmp_path / "imagenet"
    cat = write(root / "n02_cat" / "a.JPEG", image_bytes(10, 8, 0)).read_bytes()
    write(root / "n02_cat" / "b.jpg", corrupt_jpeg())
    dog = write(root / "n01_dog" / "sub" / "c.png", image_bytes(6, 6, 1, "PNG")).read_bytes()
    write(root / "n01_dog" / "d.png", truncated_png())
    write(root / "n01_dog" / "notes.txt", "not an image")
    (report,) = convert_images.main(["--images", str(root), "--split", "train", "--out", str(tmp_path / "out"),
                                     "--no-progress"])
    rows = read_mds(tmp_path / "out" / "train")
    assert [(r["label"], r["image"]) for r in rows] == [(0, dog), (1, cat)]
    assert json.loads((tmp_path / "out" / "train" / "classes.json").read_text()) == {"classes": ["n01_dog", "n02_cat"]}
    assert report.schema == "image_labeled" and report_counts(report) == {"corrupt_image": 2}

    (flat,) = convert_images.main(["--images", str(root / "n01_dog"), "--labels", "none",
                                   "--out", str(tmp_path / "flat"), "--no-progress"])
    rows = read_mds(tmp_path / "flat")
    assert [set(r) for r in rows] == [{"image"}] and rows[0]["image"] == dog and flat.schema == "image"
