"""VQA v2 metrics, the official per-type report and the test-dev submission file.

Two different numbers are called "VQA score", and both are provided:

* :class:`VQAAccuracy` / :func:`vqa_accuracy`: the official VQA v2 accuracy
  of predicted answer *strings* against the 10 raw annotator answers, as the
  current GT-Vision-Lab/VQA evaluator computes it (``PythonEvaluationTools/
  vqaEvaluation/vqaEval.py``, ``VQAEval.evaluate``, after commit a013f00
  "Fixed processing answers bug" of 2021):

  1. tabs and newlines become spaces and the ends are stripped, in every
     annotator answer and in the prediction;
  2. if the cleaned annotator answers are NOT all the same, every annotator
     answer and the prediction go through ``processPunctuation`` then
     ``processDigitArticle`` (:func:`process_punctuation`,
     :func:`process_digit_article`); if they are unanimous, nothing more is
     done to either side ("ten" scores 0 against ten "10"s);
  3. for each annotator, ``min(1, #other annotators equal to the prediction / 3)``;
     the question's accuracy is the mean of these 10 leave-one-out values.

  (The script leaves an annotator out by comparing answer *records*; official
  records carry distinct ``answer_id`` values, so that is exactly one annotator.)
  :func:`vqa_report` adds the script's ``setAccuracy``: 100 x the mean,
  rounded to 2 decimals, overall, per answer type and per question type.
* :class:`VQAScore`: what the official VLMo code logs during fine-tuning: the
  soft target (0 / 0.3 / 0.6 / 0.9 / 1.0 for 0 / 1 / 2 / 3 / >=4 matching
  annotators, see :func:`vlmo_composer.data.vqa_answers.soft_score`) of the
  argmax label. Answers outside the vocabulary count 0 here, and so does a val
  question with none in it (val keeps them, ``data_prep/convert_vqa.py``; only
  training drops them), while :class:`VQAAccuracy` scores its raw answers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from vlmo_composer.data.vqa_answers import process_digit_article, process_punctuation
from vlmo_composer.metrics.common import IdKeyedMetric, as_id_tensor, first_index_per_id


def _clean_whitespace(answer: str) -> str:
    return answer.replace("\n", " ").replace("\t", " ").strip()


def _normalise(answer: str) -> str:
    return process_digit_article(process_punctuation(answer))


def vqa_accuracy(pred: str, gt_answers: Sequence[str]) -> float:
    """Official VQA v2 accuracy of one predicted answer (0/0.3/0.6/0.9/1.0 with 10 annotators)."""
    if isinstance(gt_answers, str):
        raise TypeError("gt_answers must be the list of annotator answers, not one string")
    if len(gt_answers) == 0:
        raise ValueError("VQA accuracy needs the annotators' answers; this question has none")
    answers = [_clean_whitespace(a) for a in gt_answers]
    answer = _clean_whitespace(pred)
    if len(set(answers)) > 1:
        answers = [_normalise(a) for a in answers]
        answer = _normalise(answer)
    matches = sum(a == answer for a in answers)
    # Leaving annotator j out leaves ``matches - (answers[j] == answer)`` matching others.
    per_subset = [min(1, (matches - (a == answer)) / 3) for a in answers]
    return sum(per_subset) / len(per_subset)


@dataclass(frozen=True)
class AnnotatedQuestion:
    """One question of an annotation file: what :func:`vqa_report` needs of it."""

    question_id: int
    answers: tuple[str, ...]  # the raw annotator answers
    question_type: str
    answer_type: str


def vqa_report(
    questions: Sequence[AnnotatedQuestion], predictions: Mapping[int, str], decimals: int = 2
) -> dict[str, Any]:
    """The official evaluator's numbers: percentages rounded to ``decimals`` places.

    ``overall``, ``perQuestionType`` and ``perAnswerType`` are ``VQAEval.accuracy``
    (the script's accuracy JSON); ``perQuestion`` is ``VQAEval.evalQA``. Groups
    are listed in order of first appearance in ``questions``.
    """
    if not questions:
        raise ValueError("no annotated questions to score")
    accuracy: list[float] = []
    per_question_type: dict[str, list[float]] = {}
    per_answer_type: dict[str, list[float]] = {}
    per_question: dict[int, float] = {}
    for question in questions:
        acc = vqa_accuracy(predictions[question.question_id], question.answers)
        accuracy.append(acc)
        per_question_type.setdefault(question.question_type, []).append(acc)
        per_answer_type.setdefault(question.answer_type, []).append(acc)
        per_question[question.question_id] = round(100 * acc, decimals)

    def percent(values: list[float]) -> float:
        return round(100 * float(sum(values)) / len(values), decimals)

    return {
        "overall": percent(accuracy),
        "perQuestionType": {k: percent(v) for k, v in per_question_type.items()},
        "perAnswerType": {k: percent(v) for k, v in per_answer_type.items()},
        "perQuestion": per_question,
    }


class VQAAccuracy(IdKeyedMetric):
    """Mean official VQA v2 accuracy over distinct questions (see :func:`vqa_accuracy`).

    Strings cannot be gathered across ranks, so each question's accuracy is
    computed in ``update`` and only numbers and question ids are kept.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_list_state("accuracy", torch.float64)
        self.add_list_state("question_ids", torch.int64)

    def update(
        self, preds: Sequence[str], gt_answers: Sequence[Sequence[str]], question_ids: Any
    ) -> None:
        ids = as_id_tensor(question_ids, "question_ids")
        if not len(preds) == len(gt_answers) == len(ids):
            raise ValueError(
                f"got {len(preds)} predictions, {len(gt_answers)} answer lists and "
                f"{len(ids)} question ids"
            )
        unanswered = [int(q) for q, gt in zip(ids, gt_answers, strict=True) if len(gt) == 0]
        if unanswered:
            raise ValueError(f"questions {unanswered[:10]} have no annotator answers (test split?)")
        accuracy = [vqa_accuracy(p, gt) for p, gt in zip(preds, gt_answers, strict=True)]
        self.append("accuracy", torch.tensor(accuracy, dtype=torch.float64))
        self.append("question_ids", ids)

    def compute(self) -> Tensor:
        return _mean_over_distinct(self.gathered("accuracy"), self.gathered("question_ids"))


class VQAScore(IdKeyedMetric):
    """Mean soft target of the argmax label over distinct questions (VLMo's validation score)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_list_state("score", torch.float64)
        self.add_list_state("question_ids", torch.int64)

    def update(self, logits: Tensor, targets: Tensor, question_ids: Any) -> None:
        """``logits`` and ``targets`` are ``[B, num_answers]``; targets hold the soft scores."""
        ids = as_id_tensor(question_ids, "question_ids")
        if logits.ndim != 2 or logits.shape != targets.shape or len(logits) != len(ids):
            raise ValueError(
                f"expected logits and targets [B, num_answers] and B question ids, got "
                f"{tuple(logits.shape)}, {tuple(targets.shape)} and {len(ids)} ids"
            )
        best = logits.detach().argmax(dim=1, keepdim=True)
        self.append("score", targets.detach().gather(1, best).squeeze(1))
        self.append("question_ids", ids)

    def compute(self) -> Tensor:
        return _mean_over_distinct(self.gathered("score"), self.gathered("question_ids"))


def _mean_over_distinct(values: Tensor, ids: Tensor) -> Tensor:
    if len(ids) == 0:
        raise ValueError("no questions were evaluated before compute()")
    return values[first_index_per_id(ids)].mean()


def gather_predictions(
    question_ids: Sequence[int], answers: Sequence[str]
) -> tuple[list[int], list[str]]:
    """Every rank's ``(question_id, answer)`` pairs, on every rank (as given when not distributed).

    Collective: when ``torch.distributed`` is initialised all ranks must call it.
    """
    if len(question_ids) != len(answers):
        raise ValueError(f"got {len(question_ids)} question ids but {len(answers)} answers")
    pairs = [(int(q), str(a)) for q, a in zip(question_ids, answers, strict=True)]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        per_rank: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(per_rank, pairs)
        pairs = [pair for rank_pairs in per_rank for pair in rank_pairs]
    return [q for q, _ in pairs], [a for _, a in pairs]


def write_vqa_submission(
    path: str | Path, question_ids: Sequence[int], answers: Sequence[str]
) -> int:
    """Write the evaluation-server file ``[{"question_id": int, "answer": str}, ...]``.

    Entries are sorted by question id; a question seen twice (sampler padding)
    is written once, and a question given two different answers is an error.
    Typical use at the end of a distributed test run::

        ids, answers = gather_predictions(local_ids, local_answers)
        if composer.utils.dist.get_global_rank() == 0:
            write_vqa_submission("vqa_test_dev.json", ids, answers)

    Returns the number of entries written.
    """
    if len(question_ids) != len(answers):
        raise ValueError(f"got {len(question_ids)} question ids but {len(answers)} answers")
    by_id: dict[int, str] = {}
    for question_id, answer in zip(question_ids, answers, strict=True):
        question_id = int(question_id)
        if not isinstance(answer, str):
            raise TypeError(f"answer of question {question_id} is {type(answer).__name__}, not str")
        if by_id.setdefault(question_id, answer) != answer:
            raise ValueError(
                f"question {question_id} has two different answers: "
                f"{by_id[question_id]!r} and {answer!r}"
            )
    entries = [{"question_id": q, "answer": by_id[q]} for q in sorted(by_id)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries))
    return len(entries)
