"""VQA answer normalisation, vocabulary and soft scores (official VQA v2 / VLMo behaviour)."""

from __future__ import annotations

import pytest

from vlmo_composer.data.vqa_answers import (
    answer_targets,
    answer_vocab_from_json,
    answer_vocab_to_json,
    build_answer_vocab,
    normalize_answer,
    soft_score,
)


@pytest.mark.parametrize("raw, expected", [
    ("Two", "2"), ("none", "0"), ("ten-four", "10 4"),  # number words become digits
    ("the cat", "cat"), ("A Man's hat", "man's hat"),  # articles go
    ("dont", "don't"), ("isnt it", "isn't it"),  # apostrophes restored
    ("yes.", "yes"), ("Mr. T.", "mr t"), ("3.5", "3.5"), ("a.b.c", "abc"),  # periods, except in numbers
    ("1,000", "1000"), ("2 , 3", "2 3"),  # commas
    ("t-shirt", "t shirt"), ("red - blue", "red blue"), ("(left)", "left"), ("can't tell!", "can't tell"),
    ("." * 40, "." * 8),  # the official call removes at most 32 periods
])
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_soft_score() -> None:
    assert [soft_score(n) for n in range(7)] == [0.0, 0.3, 0.6, 0.9, 1.0, 1.0, 1.0]


def test_vocabulary_is_normalised_thresholded_and_in_first_seen_order() -> None:
    answers = ["Yes", "two"] + ["2"] * 8 + ["yes"] * 7 + ["the dog", "dog"] * 4 + ["cat"] * 8 + ["yes."]
    # yes: 9, 2: 9, dog: 8 (< 9), cat: 8
    assert build_answer_vocab(answers) == ["yes", "2"]
    assert build_answer_vocab(answers, min_count=8) == ["yes", "2", "dog", "cat"]


def test_targets_count_raw_answers_in_first_seen_order() -> None:
    answer_to_label = {"yes": 0, "2": 1, "no": 2}
    raw = ["no", "yes", "yes", "Yes", "2", "two", "yes", "yes", "no", "maybe"]
    assert answer_targets(raw, answer_to_label) == ([2, 0, 1], [0.6, 1.0, 0.3])
    assert answer_targets(["maybe"] * 10, answer_to_label) == ([], [])


def test_vocab_json_round_trip_and_errors() -> None:
    assert answer_vocab_from_json(answer_vocab_to_json(["yes", "no", "2"])) == ["yes", "no", "2"]
    with pytest.raises(ValueError, match="duplicate"):
        answer_vocab_from_json('{"answers": ["yes", "yes"]}')
    with pytest.raises(ValueError, match="'answers' list"):
        answer_vocab_from_json('["yes"]')
