"""The VQA evaluation-server file, predicted on an unlabelled split chosen by its label.

    python eval.py yamls/finetune/vqa_base.yaml --vqa-submission vqa_test_dev.json --split test-dev

The split is a loader of the YAML's ``predict_loaders`` (``test-dev``, ``test``:
splits without answers, which training never reads) or of its
``eval_loaders``. A submission made from a split whose questions carry
annotator answers (val) is almost always a mistake, so it is refused unless
``--allow-answers`` is given. On several ranks each predicts its share of the split,
the predictions are gathered and rank 0 writes the file, byte for byte one process's.
"""

from __future__ import annotations

from typing import Any

import torch
from composer.utils import dist

from vlmo_composer.training.config import EvalLoaderConfig, TrainConfig
from vlmo_composer.data.loaders import build_dataloader
from vlmo_composer.data.local_cache import cache_namespace
from vlmo_composer.metrics import gather_predictions, write_vqa_submission


class SubmissionError(ValueError):
    """The submission cannot be made as asked (no such split, or a split with answers)."""


def find_split(cfg: TrainConfig, split: str) -> tuple[str, EvalLoaderConfig]:
    """The loader labelled ``split`` (``predict_loaders`` first) and where it is in the YAML."""
    sections = {"predict_loaders": cfg.predict_loaders, "eval_loaders": cfg.eval_loaders}
    for section, loaders in sections.items():
        for i, loader in enumerate(loaders):
            if loader.label == split:
                return f"{section}[{i}]", loader
    labels = {section: [loader.label for loader in loaders] for section, loaders in sections.items()}
    raise SubmissionError(f"no loader labelled {split!r} to predict on: the YAML has {labels}")


@torch.no_grad()
def predict_answers(task, loader, device: torch.device, split: str, allow_answers: bool) -> dict[int, str]:
    """question_id -> predicted answer string for every question of ``loader``.

    A split with annotator answers is refused (unless ``allow_answers``) on every rank
    together: ranks agree after predicting their shares, so a rank whose share happens
    to hold no answered question does not wait alone in the gather that follows.
    """
    predictions: dict[int, str] = {}
    answered: list[int] = []
    single = dist.get_world_size() == 1
    for batch in loader:
        ids = batch["question_id"].tolist()
        if not (allow_answers or answered):
            answered = [q for q, answers in zip(ids, batch["answers_json"], strict=True) if answers != "[]"][:1]
        if answered:  # refused: one process stops here, a rank tells the others once through its share
            if single:
                break
            continue
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        predictions.update(zip(ids, task.predict_answers(task.eval_forward(batch)["logits"]), strict=True))
    found = [answered] if single else dist.all_gather_object(answered)
    first = next((ids[0] for ids in found if ids), None)
    if first is not None:
        raise SubmissionError(
            f"split {split!r} has annotator answers (question {first}, ...): a submission is made "
            "from an unlabelled split (test-dev or test); pass --allow-answers to write one from it anyway"
        )
    return predictions


def write_split_submission(
    cfg: TrainConfig, task, device: torch.device, split: str, path: str, allow_answers: bool = False
) -> dict[str, Any]:
    """Predict every question of ``split`` and write ``[{question_id, answer}]`` to ``path`` (rank 0).

    Collective when distributed: every rank predicts its share and all take part in the gather.
    """
    if getattr(task, "answers", None) is None:
        raise SubmissionError("a VQA submission needs a VQA task with an answer_vocab (answer strings)")
    where, loader_cfg = find_split(cfg, split)
    loader = build_dataloader(loader_cfg, cfg.device_eval_batch_size or 32, train=False, where=where,
                              cache_namespace=cache_namespace(cfg.run_name, f"predict-{split}"))
    task.to(device).eval()
    predictions = predict_answers(task, loader, device, split, allow_answers)
    ids, answers = gather_predictions(list(predictions), list(predictions.values()))
    written = write_vqa_submission(path, ids, answers) if dist.get_global_rank() == 0 else len(set(ids))
    return {"split": split, "loader": where, "questions": written, "submission": path}
