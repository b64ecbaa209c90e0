"""Text corpora -> text shards; image folders -> image-only shards."""

from __future__ import annotations

import json
from pathlib import Path

from prep_helpers import corrupt_jpeg, image_bytes, report_counts, truncated_png, write

from data_prep import convert_images, convert_text
from data_prep.convert_text import chunk_text


def test_chunk_text_keeps_sentences_whole() -> None:
    text = "One two three. Four five six! Seven eight nine? Ten."
    assert chunk_text(text, 100) == [text]
    assert chunk_text(text, 30) == ["One two three. Four five six!", "Seven eight nine? Ten."]
    assert chunk_text(text, 15) == ["One two three.", "Four five six!", "Seven eight", "nine? Ten."]
    assert all(len(p) <= 8 for p in chunk_text("abcdefghijklmnop qr. st", 8))


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
