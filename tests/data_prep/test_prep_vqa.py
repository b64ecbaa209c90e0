"""VQA v2 -> VQA shards: the answer vocabulary and soft scores exactly as the official VLMo code."""

from __future__ import annotations

from pathlib import Path

import pytest
from prep_helpers import corrupt_jpeg, image_bytes, report_counts, write, write_json

from data_prep import convert_vqa
from vlmo_composer.data.vqa_answers import answer_vocab_from_json


def annotation(qid: int, image_id: int, majority: str, answers: list[str]) -> dict:
    assert len(answers) == 10
    return {"question_id": qid, "image_id": image_id, "answer_type": "other", "multiple_choice_answer": majority,
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)]}


def question(qid: int, image_id: int, text: str) -> dict:
    return {"question_id": qid, "image_id": image_id, "question": text}


def make_vqa(root: Path) -> dict[int, bytes]:
    images = {}
    for folder, image_id, data in [("train2014", 10, image_bytes(16, 16, 10)), ("train2014", 11, image_bytes(8, 8, 11)),
                                   ("train2014", 13, corrupt_jpeg()), ("val2014", 20, image_bytes(8, 8, 20)),
                                   ("val2014", 21, image_bytes(8, 8, 21)), ("test2015", 30, image_bytes(8, 8, 30)),
                                   ("test2015", 31, image_bytes(8, 8, 31))]:
        images[image_id] = write(root / "coco" / folder / f"COCO_{folder}_{image_id:012d}.jpg", data).read_bytes()
    vqa = root / "vqa"
    write_json(vqa / "v2_OpenEnded_mscoco_train2014_questions.json", {"questions": [
        question(100, 10, "What color is it?"), question(110, 11, "What animal?"), question(101, 10, "How many?"),
        question(120, 12, "Missing image?"), question(130, 13, "Corrupt image?"), {"question_id": 140}]})
    write_json(vqa / "v2_mscoco_train2014_annotations.json", {"annotations": [
        annotation(100, 10, "Red", ["red", "blue", "red", "red", "blue", "red", "green", "Red", "red", "red"]),
        annotation(110, 11, "zebra", ["zebra"] * 10),
        annotation(101, 10, "two", ["2", "two", "2", "2", "two", "two", "two", "two", "two", "two"]),
        annotation(120, 12, "red", ["red"] * 10),
        annotation(130, 13, "red", ["red"] * 10)]})
    write_json(vqa / "v2_OpenEnded_mscoco_val2014_questions.json", {"questions": [
        question(200, 20, "Sky color?"), question(210, 21, "How many cats?"), question(211, 21, "Sky?")]})
    write_json(vqa / "v2_mscoco_val2014_annotations.json", {"annotations": [
        annotation(200, 20, "blue", ["blue"] * 9 + ["red"]),
        annotation(210, 21, "2", ["2", "2", "3", "2", "2", "2", "2", "2", "2", "2"]),
        annotation(211, 21, "blue.", ["blue"] * 10)]})
    write_json(vqa / "v2_OpenEnded_mscoco_test-dev2015_questions.json", {"questions": [question(300, 30, "Test-dev?")]})
    write_json(vqa / "v2_OpenEnded_mscoco_test2015_questions.json", {"questions": [
        question(300, 30, "Test-dev?"), question(310, 31, "Test only?")]})
    return images


def run(tmp_path: Path, *extra: str) -> list:
    return convert_vqa.main(["--vqa-root", str(tmp_path / "vqa"), "--images", str(tmp_path / "coco"),
                             "--out", str(tmp_path / "out"), "--min-answer-count", "2", "--no-progress", *extra])


def test_vqa_vocabulary_scores_and_splits(tmp_path: Path, read_mds) -> None:
    images = make_vqa(tmp_path)
    reports = {r.split: r for r in run(tmp_path)}
    out = tmp_path / "out"
    # normalised multiple-choice answers in first-occurrence order, kept if seen >= 2 times:
    # red (Red, red, red), 2 (two, 2), blue (blue, blue.); zebra once
    assert answer_vocab_from_json((out / "answer_vocab.json").read_text()) == ["red", "2", "blue"]

    train = read_mds(out / "train")
    assert [(r["question_id"], r["image_id"]) for r in train] == [(100, "10"), (101, "10")]
    red, blue = train[0], train[1]
    assert red["question"] == "What color is it?" and red["image"] == images[10]
    # raw answers counted as written: "red" x7 -> 1.0, "blue" x2 -> 0.6; "Red" and "green" not in the vocabulary
    assert (red["labels"], red["scores"]) == ([0, 2], [1.0, 0.6])
    assert red["answers"][7] == "Red" and len(red["answers"]) == 10
    # "2" x3 -> 0.9; the raw "two" is not a vocabulary entry (the vocabulary holds "2")
    assert (blue["labels"], blue["scores"]) == ([1], [0.9])
    assert report_counts(reports["train"]) == {"missing_image": 1, "corrupt_image": 1}
    assert report_counts(reports["train"], "dropped") == {"no_answer_in_vocab": 1, "malformed_question": 1}
    assert reports["train"].dropped.reasons["no_answer_in_vocab"].first_ids == ["110"]

    val = read_mds(out / "val")
    assert [(r["question_id"], r["labels"], r["scores"]) for r in val] == [
        (200, [2, 0], [1.0, 0.3]), (210, [1], [1.0]), (211, [2], [1.0])]

    test_dev = read_mds(out / "test-dev")
    assert [(r["question_id"], r["answers"], r["labels"], r["scores"]) for r in test_dev] == [(300, [], [], [])]
    assert test_dev[0]["image"] == images[30]
    assert [r["question_id"] for r in read_mds(out / "test")] == [300, 310]


def test_vlmo_split_moves_val_into_train(tmp_path: Path, read_mds) -> None:
    make_vqa(tmp_path)
    reports = run(tmp_path, "--vlmo-split", "--vlmo-holdout", "1", "--splits", "train", "val")
    assert [r.split for r in reports] == ["train", "val"]
    out = tmp_path / "out"
    assert [r["question_id"] for r in read_mds(out / "train")] == [100, 101, 200]
    assert [r["question_id"] for r in read_mds(out / "val")] == [210, 211]


def test_missing_annotations_are_fatal(tmp_path: Path) -> None:
    make_vqa(tmp_path)
    (tmp_path / "vqa" / "v2_mscoco_val2014_annotations.json").unlink()
    with pytest.raises(convert_vqa.ConversionError, match="val annotations not found"):
        run(tmp_path)
