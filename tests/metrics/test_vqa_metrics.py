"""VQA metrics against hand-worked values and the official formulas.

The accuracy cases are worked through the steps of the current official
evaluator (GT-Vision-Lab/VQA master, ``PythonEvaluationTools/vqaEvaluation/
vqaEval.py`` after a013f00 "Fixed processing answers bug", ``VQAEval.evaluate``):
every answer is whitespace-cleaned; only when the cleaned annotator answers
disagree are they AND the prediction put through ``processPunctuation`` and
``processDigitArticle``; a unanimous question is compared as written.
"""

from __future__ import annotations

import json
import random

import pytest
import torch

from vlmo_composer.data.vqa_answers import answer_targets, soft_score
from vlmo_composer.metrics import (
    AnnotatedQuestion,
    VQAAccuracy,
    VQAScore,
    gather_predictions,
    vqa_accuracy,
    vqa_report,
    write_vqa_submission,
)


def annotators(matching: str, m: int, other: str = "blue") -> list[str]:
    """Ten annotator answers, ``m`` of them ``matching``."""
    return [matching] * m + [other] * (10 - m)


@pytest.mark.parametrize(
    ("m", "expected"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (7, 1.0), (10, 1.0)]
)
def test_leave_one_out_steps(m, expected):
    # m matching of 10: the m matching annotators left out see m-1 matches, the others m.
    assert vqa_accuracy("red", annotators("red", m)) == pytest.approx(expected, abs=1e-12)


def brute_force_accuracy(answer: str, gt: list[str]) -> float:
    """Literal statement: mean over every set of all-but-one annotators of min(1, matches/3)."""
    subsets = [gt[:j] + gt[j + 1 :] for j in range(len(gt))]
    return sum(min(1.0, sum(a == answer for a in s) / 3) for s in subsets) / len(subsets)


def test_equals_brute_force_leave_one_out():
    rng = random.Random(0)
    vocab = ["yes", "no", "2", "red", "dog"]
    for _ in range(200):
        gt = [rng.choice(vocab) for _ in range(rng.choice([3, 9, 10]))]
        pred = rng.choice(vocab)
        assert vqa_accuracy(pred, gt) == pytest.approx(brute_force_accuracy(pred, gt), abs=1e-12)


@pytest.mark.parametrize(
    ("pred", "gt", "expected"),
    [
        ("Two", annotators("2", 3), 0.9),  # number word -> digit, lower case
        ("a dog", annotators("dog", 4), 1.0),  # article removed
        ("The Dog.", annotators("dog", 2), 0.6),  # article, case and final period
        ("dont know", annotators("don't know", 1), 0.3),  # contraction restored
        ("yes!", annotators("yes", 3), 0.9),  # punctuation removed
        ("black-and-white", annotators("black and white", 4), 1.0),  # joining hyphen -> space
        ("2.5", annotators("2.5", 3), 0.9),  # decimal point kept
        ("  yes\n", annotators("yes", 2), 0.6),  # surrounding whitespace
        ("no", annotators("yes", 10), 0.0),
    ],
)
def test_normalisation_cases(pred, gt, expected):
    assert vqa_accuracy(pred, gt) == pytest.approx(expected, abs=1e-12)


def test_accuracy_metric_averages_distinct_questions():
    metric = VQAAccuracy()
    metric.update(["red", "two"], [annotators("red", 1), annotators("2", 4)], [262148000, 5])
    metric.update(["red", "dog"], [annotators("red", 1), annotators("cat", 3)], [262148000, 7])
    assert metric.compute().item() == pytest.approx((0.3 + 1.0 + 0.0) / 3, abs=1e-12)


def test_accuracy_metric_rejects_unanswered_questions():
    with pytest.raises(ValueError, match=r"questions \[11\] have no annotator answers"):
        VQAAccuracy().update(["yes", "no"], [["yes"], []], [10, 11])
    with pytest.raises(TypeError, match="not one string"):
        vqa_accuracy("yes", "yes")


def test_soft_score_steps_through_training_targets():
    # Five questions whose argmax answer was given by 0, 1, 2, 3 and 4 of the 10 annotators.
    vocab = ["cat", "dog", "red", "2", "yes", "no"]
    label = {a: i for i, a in enumerate(vocab)}
    raw = [["zebra"] * (10 - m) + ["dog"] * m for m in range(5)]  # "zebra" is out of vocab
    targets = torch.zeros(5, len(vocab))
    for row, answers in enumerate(raw):
        labels, scores = answer_targets(answers, label)
        targets[row, labels] = torch.tensor(scores)
    logits = torch.full((5, len(vocab)), -1.0)
    logits[:, label["dog"]] = 1.0
    metric = VQAScore()
    metric.update(logits, targets, torch.arange(5))
    assert [soft_score(m) for m in range(5)] == [0.0, 0.3, 0.6, 0.9, 1.0]
    assert targets[:, label["dog"]].tolist() == pytest.approx([0.0, 0.3, 0.6, 0.9, 1.0])
    assert metric.compute().item() == pytest.approx((0.3 + 0.6 + 0.9 + 1.0) / 5, abs=1e-7)


def test_vqa_score_equals_official_formula_and_drops_repeats():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 30, generator=g)
    targets = torch.zeros(12, 30)
    targets[torch.rand(12, 30, generator=g) < 0.2] = 0.6
    targets[:, logits.argmax(1)[:4]] = 1.0
    # The official VLMo VQAScore: one-hot of the argmax times the targets, summed, over B.
    one_hots = torch.zeros_like(targets).scatter_(1, logits.argmax(1, keepdim=True), 1)
    official = (one_hots * targets).sum() / len(logits)
    metric = VQAScore()
    metric.update(logits[:8], targets[:8], torch.arange(8))
    metric.update(logits[6:], targets[6:], torch.arange(6, 12))  # 6 and 7 again
    assert metric.compute().item() == pytest.approx(official.item(), abs=1e-7)
    assert 0 < official < 1


def test_submission_sorted_deduplicated(tmp_path):
    ids, answers = gather_predictions([30, 10, 20, 10], ["no", "yes", "2", "yes"])
    assert (ids, answers) == ([30, 10, 20, 10], ["no", "yes", "2", "yes"])
    path = tmp_path / "out" / "vqa_submit.json"
    assert write_vqa_submission(path, ids, answers) == 3
    assert json.loads(path.read_text()) == [
        {"question_id": 10, "answer": "yes"},
        {"question_id": 20, "answer": "2"},
        {"question_id": 30, "answer": "no"},
    ]
    with pytest.raises(ValueError, match="question 10 has two different answers: 'yes' and 'no'"):
        write_vqa_submission(path, [10, 10], ["yes", "no"])


@pytest.mark.parametrize(
    ("pred", "gt", "expected"),
    [
        # The table. Disagreeing annotators: both sides normalised ("the dog" -> "dog",
        # "Dog" -> "dog"); 7 of 10 match -> 1.0, 3 of 10 -> (3 x 2/3 + 7 x 1) / 10 = 0.9.
        ("the dog", ["the dog"] * 7 + ["red"] * 3, 1.0),
        ("dog", ["Dog"] * 3 + ["cat"] * 7, 0.9),
        # Unanimous annotators: neither side is normalised, "ten" != "10", "1,000" == "1,000".
        ("ten", ["10"] * 10, 0.0),
        ("1,000", ["1,000"] * 10, 1.0),
    ],
)
def test_official_evaluator_table(pred, gt, expected):
    assert vqa_accuracy(pred, gt) == pytest.approx(expected, abs=1e-12)


def test_unanimous_questions_are_compared_as_written():
    # Neither the annotators' answers nor the prediction go through the two steps.
    assert vqa_accuracy("two", ["2"] * 10) == 0.0
    assert vqa_accuracy("Yes", ["yes"] * 10) == 0.0
    assert vqa_accuracy("yes.", ["yes"] * 10) == 0.0
    assert vqa_accuracy("yes", ["yes"] * 10) == 1.0
    # Whitespace cleaning (tabs/newlines -> spaces, strip) still applies to both sides, and
    # it comes BEFORE the agreement test: " yes\n" and "yes" agree, so "Yes" stays "Yes".
    assert vqa_accuracy(" yes\t", ["yes"] * 9 + [" yes\n"]) == 1.0
    assert vqa_accuracy("Yes", ["yes"] * 9 + ["yes "]) == 0.0


def test_disagreeing_annotators_get_both_normalisation_steps():
    # processPunctuation then processDigitArticle on every annotator answer and the prediction.
    assert vqa_accuracy("dog", ["the dog"] * 3 + ["cat"] * 7) == pytest.approx(0.9)
    assert vqa_accuracy("dog", ["dog."] * 3 + ["cat"] * 7) == pytest.approx(0.9)
    assert vqa_accuracy("2", ["Two"] * 4 + ["3"] * 6) == 1.0
    assert vqa_accuracy("ten", ["10"] * 2 + ["11"] * 8) == pytest.approx(0.6)
    # A comma between digits makes the punctuation step drop (not space out) every mark.
    assert vqa_accuracy("1000", ["1,000"] * 3 + ["100"] * 7) == pytest.approx(0.9)


def test_report_breaks_down_by_answer_and_question_type():
    # VQAEval.setAccuracy: 100 x mean, rounded to 2 decimals, overall and per group; evalQA:
    # each question's 100 x accuracy, rounded. Groups appear in annotation order.
    annotated = [
        (1, "is this", "yes/no", ["yes"] * 10, "yes"),  # unanimous, equal: 1.0
        (2, "how many", "number", ["2"] + ["3"] * 9, "two"),  # disagree, "two" -> "2": 0.3
        (3, "is this", "yes/no", ["yes"] * 5 + ["no"] * 5, "no"),  # 1.0
        (4, "what color is the", "other", ["red"] * 2 + ["blue"] * 8, "Red"),  # 0.6
        (5, "how many", "number", ["4"] * 10, "four"),  # unanimous, not normalised: 0.0
        (6, "how many", "number", ["1"] * 2 + ["0"] * 8, "one"),  # 0.6
        (7, "is this", "yes/no", ["no"] * 10, "yes"),  # 0.0
    ]
    questions = [AnnotatedQuestion(q, tuple(gt), qtype, atype) for q, qtype, atype, gt, _ in annotated]
    report = vqa_report(questions, {q: pred for q, *_, pred in annotated})
    assert report == {
        "overall": 50.0,
        "perQuestionType": {"is this": 66.67, "how many": 30.0, "what color is the": 60.0},
        "perAnswerType": {"yes/no": 66.67, "number": 30.0, "other": 60.0},
        "perQuestion": {1: 100.0, 2: 30.0, 3: 100.0, 4: 60.0, 5: 0.0, 6: 60.0, 7: 0.0},
    }
    assert list(report["perAnswerType"]) == ["yes/no", "number", "other"]
    assert vqa_report(questions[:1], {1: "yes"}, decimals=0)["overall"] == 100.0

