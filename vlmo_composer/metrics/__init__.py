"""Evaluation metrics computed as the papers compute them, correct across ranks."""

from vlmo_composer.metrics.nlvr2 import NLVR2Accuracy, nlvr2_sentence_key
from vlmo_composer.metrics.retrieval import (
    Ranking,
    RetrievalRecall,
    chance_recall,
    rank_queries,
    recall_from_ranks,
    recall_from_scores,
    recall_keys,
    retrieval_recall,
)
from vlmo_composer.metrics.vqa import (
    AnnotatedQuestion,
    VQAAccuracy,
    VQAScore,
    gather_predictions,
    vqa_accuracy,
    vqa_report,
    write_vqa_submission,
)

__all__ = [
    "AnnotatedQuestion",
    "NLVR2Accuracy",
    "Ranking",
    "RetrievalRecall",
    "VQAAccuracy",
    "VQAScore",
    "chance_recall",
    "gather_predictions",
    "nlvr2_sentence_key",
    "rank_queries",
    "recall_from_ranks",
    "recall_from_scores",
    "recall_keys",
    "retrieval_recall",
    "vqa_accuracy",
    "vqa_report",
    "write_vqa_submission",
]
