"""VQA rows (schema ``vqa``), shared by the VQA v2 converter and the synthetic generator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ANSWER_VOCAB_NAME = "answer_vocab.json"


@dataclass(frozen=True)
class VqaQuestion:
    question_id: int
    question: str
    answers: tuple[str, ...]  # raw annotator answers (empty for test splits)
    labels: tuple[int, ...]  # vocabulary ids with a non-zero soft score
    scores: tuple[float, ...]


def vqa_rows(image: bytes, image_id: str, questions: tuple[VqaQuestion, ...]) -> list[dict[str, Any]]:
    """One row per question, each carrying the image bytes."""
    return [{"image": image, "question": q.question, "question_id": q.question_id, "image_id": image_id,
             "answers": list(q.answers), "labels": list(q.labels), "scores": list(q.scores)}
            for q in questions]
