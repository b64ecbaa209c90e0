"""NLVR2 fine-tuning: two fusion passes (second image with modality id 2), concatenated poolers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from vlmo_composer import registry
from vlmo_composer.metrics import NLVR2Accuracy
from vlmo_composer.model.flops import TRAIN_MULTIPLIER, fusion_flops
from vlmo_composer.tasks.base import TaskConfig, VLMoTask
from vlmo_composer.tasks.vqa import FINETUNE_UNEXPECTED


@dataclass
class NLVR2Config(TaskConfig):
    pass


@registry.tasks.register("nlvr2")
class NLVR2Task(VLMoTask):
    """Cross-entropy over (False, True) from ``[pooled(text, left); pooled(text, right)]``.

    Both passes run as one fused batch of ``2B``; the right image carries modality
    id 2, initialised from the image id when loading a pre-trained checkpoint.
    """

    config_class = NLVR2Config
    model_defaults = dict(itc_head=False, itc_vl_head=False, itm_head=False, mlm_head=False,
                          nlvr2_head=True, num_modality_types=3)
    init_allow_missing = ("nlvr2_classifier*",)
    init_allow_unexpected = FINETUNE_UNEXPECTED

    def logits(self, batch: dict[str, Any]) -> torch.Tensor:
        batch = self.prepare(batch)
        return self.model.nlvr2_pair_logits(
            batch["input_ids"], batch["attention_mask"], batch["pixel_values_0"], batch["pixel_values_1"],
            draw_keys=self.draw_keys(batch),
        )

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        logits = self.logits(batch)
        loss = F.cross_entropy(logits.float(), batch["label"])
        return {"losses": {"total": loss, "nlvr2": loss.detach()}, "logits": logits}

    def eval_forward(self, batch: dict[str, Any], outputs: Any = None) -> dict[str, Any]:
        logits = outputs["logits"] if outputs is not None else self.logits(batch)
        return {"logits_or_preds": logits.float(), "labels": batch["label"], "identifiers": batch["identifier"]}

    def get_metrics(self, is_train: bool = False) -> dict:
        return {} if is_train else {"NLVR2Accuracy": NLVR2Accuracy()}

    def flops_per_batch(self, batch: dict[str, Any]) -> float:
        batch_size, text_len = batch["input_ids"].shape
        d = self.config.hidden_size
        head = 2 * (2 * d) * (2 * d) + 2 * 2 * d * 2
        return TRAIN_MULTIPLIER * batch_size * (2 * fusion_flops(self.config, text_len) + head)
