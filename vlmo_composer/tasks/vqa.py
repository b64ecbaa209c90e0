"""VQA v2 fine-tuning: fusion encoder, pooler -> VQA head, BCE against soft scores."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Optional

import torch
import torch.nn.functional as F

from vlmo_composer import registry
from vlmo_composer.data.vqa_answers import answer_vocab_from_json
from vlmo_composer.metrics import VQAAccuracy, VQAScore
from vlmo_composer.model import VLMoConfig
from vlmo_composer.model.flops import TRAIN_MULTIPLIER, fusion_flops
from vlmo_composer.checkpoints.sources import local_copy
from vlmo_composer.tasks.base import TaskConfig, VLMoTask

FINETUNE_UNEXPECTED = ("itc_*", "logit_*", "itm_score*", "mlm_score*", "nlvr2_classifier*", "vqa_classifier*")


@dataclass
class VQAConfig(TaskConfig):
    # The answer vocabulary written by data_prep: its size sets the head (task.model.vqa_num_labels)
    # and it maps predictions to strings. Without it, set task.model.vqa_num_labels.
    answer_vocab: Optional[str] = None


@lru_cache(maxsize=8)
def load_answers(path: str) -> tuple[str, ...]:
    """The answer strings of an ``answer_vocab.json`` (read once per path and process)."""
    with open(local_copy(path)) as fh:
        return tuple(answer_vocab_from_json(fh.read()))


@registry.tasks.register("vqa")
class VQATask(VLMoTask):
    """``BCE(logits, soft scores) x num_labels`` as the official code (after ban-vqa)."""

    config_class = VQAConfig
    model_defaults = dict(itc_head=False, itc_vl_head=False, itm_head=False, mlm_head=False)
    init_allow_missing = ("vqa_classifier*",)
    init_allow_unexpected = FINETUNE_UNEXPECTED

    @classmethod
    def model_config_for(cls, cfg: VQAConfig) -> VLMoConfig:
        """``vqa_num_labels`` is the size of ``answer_vocab``; a different explicit value is an error."""
        model = dict(cfg.model)
        if cfg.answer_vocab:
            try:
                labels = len(load_answers(cfg.answer_vocab))
            except OSError as err:
                raise ValueError(f"task.answer_vocab: cannot read {cfg.answer_vocab}: {err}") from None
            given = model.get("vqa_num_labels")
            if given is not None and given != labels:
                raise ValueError(f"task.model.vqa_num_labels={given} disagrees with task.answer_vocab "
                                 f"({cfg.answer_vocab}, {labels} answers)")
            model["vqa_num_labels"] = labels
        elif not model.get("vqa_num_labels"):
            raise ValueError("the VQA head needs task.answer_vocab (the answer_vocab.json data_prep writes) "
                             "or task.model.vqa_num_labels")
        return super().model_config_for(dataclasses.replace(cfg, model=model))

    def __init__(self, cfg: VQAConfig, model_config: Optional[VLMoConfig] = None) -> None:
        self.answers = list(load_answers(cfg.answer_vocab)) if cfg.answer_vocab else None
        super().__init__(cfg, model_config)

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        batch = self.prepare(batch)
        fused = self.model.fuse(
            batch["input_ids"], batch["attention_mask"], batch["pixel_values"], draw_keys=self.draw_keys(batch)
        )
        logits = self.model.vqa_logits(fused.pooled)
        targets = batch["vqa_targets"]
        loss = F.binary_cross_entropy_with_logits(logits.float(), targets) * targets.shape[1]
        return {"losses": {"total": loss, "vqa": loss.detach()}, "logits": logits}

    def eval_forward(self, batch: dict[str, Any], outputs: Any = None) -> dict[str, torch.Tensor]:
        if outputs is None:
            fused = self.model.fuse(batch["input_ids"], batch["attention_mask"], batch["pixel_values"])
            outputs = {"logits": self.model.vqa_logits(fused.pooled)}
        return {"logits": outputs["logits"].float(), "targets": batch["vqa_targets"], "question_ids": batch["question_id"]}

    def get_metrics(self, is_train: bool = False) -> dict:
        """VLMo's soft VQA score, and the official accuracy when answers have strings."""
        if is_train:
            return {}
        metrics: dict = {"VQAScore": VQAScore()}
        if self.answers is not None:
            metrics["VQAAccuracy"] = VQAAccuracy()
        return metrics

    def update_metric(self, batch: Any, outputs: Any, metric) -> None:
        if isinstance(metric, VQAAccuracy):
            if "answers_json" not in batch:
                raise KeyError("VQAAccuracy needs the raw annotator answers: batch has no 'answers_json' "
                               "(VQADataset adds it from the shards' 'answers' column)")
            annotators = [json.loads(a) for a in batch["answers_json"]]
            metric.update(self.predict_answers(outputs["logits"]), annotators, outputs["question_ids"])
        else:
            metric.update(outputs["logits"], outputs["targets"], outputs["question_ids"])

    def predict_answers(self, logits: torch.Tensor) -> list[str]:
        if self.answers is None:
            raise ValueError("the task was built with task.model.vqa_num_labels, not an answer_vocab: no answer strings")
        return [self.answers[i] for i in logits.argmax(-1).tolist()]

    def flops_per_batch(self, batch: dict[str, Any]) -> float:
        batch_size, text_len = batch["input_ids"].shape
        d = self.config.hidden_size
        head = 2 * d * 2 * d + 2 * 2 * d * self.config.vqa_num_labels
        return TRAIN_MULTIPLIER * batch_size * (fusion_flops(self.config, text_len) + head)

