"""Stage 3: vision-language pre-training (ITC + VL-branch ITC, hard-negative ITM, MLM)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from vlmo_composer import registry
from vlmo_composer.model import VLMo, VLMoConfig
from vlmo_composer.model.flops import TRAIN_MULTIPLIER, vl_pretrain_forward_flops
from vlmo_composer.objectives import (
    HardNegatives,
    build_itm_batch,
    contrastive_loss,
    itm_loss,
    masked_logits,
    mlm_loss,
    sample_hard_negatives,
)
from vlmo_composer.common.keyed_draws import row_keys
from vlmo_composer.objectives.distributed import gather_no_grad
from vlmo_composer.objectives.itm import KeyedDraw
from vlmo_composer.objectives.mlm import default_mlm_slots
from vlmo_composer.tasks.base import TaskConfig, VLMoTask
from vlmo_composer.tasks.retrieval_eval import RetrievalEvalMixin


@dataclass
class VLPretrainConfig(TaskConfig):
    mlm_weight: float = 0.25
    # Copy an existing expert into the VL-FFN after init_from ("scratch" keeps the fresh init).
    vl_ffn_init: str = "scratch"
    # MLM head positions per caption (fixed shapes, no host sync); None: the collator's
    # cap at mlm_prob 0.15 (6 at 40 tokens). Raise it with a higher data mlm_prob.
    mlm_slots: Optional[int] = None
    # Share of each ITM negative drawn uniformly instead of by ITC similarity (0: official;
    # see objectives/itm.py for when a short from-scratch run needs some).
    itm_uniform_negatives: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.itm_uniform_negatives <= 1.0:
            raise ValueError(f"itm_uniform_negatives must be in [0, 1], got {self.itm_uniform_negatives}")
        if self.vl_ffn_init not in ("scratch", "text", "image"):
            raise ValueError(f"vl_ffn_init '{self.vl_ffn_init}' is not one of ('scratch', 'text', 'image')")


# The step's passes through the model, each drawing its own drop path and dropout masks.
PASSES = {"image": 1, "text": 2, "positive": 3, "negative_image": 4, "negative_text": 5, "mlm": 6}


def vl_pretrain_losses(
    model: VLMo,
    batch: dict[str, torch.Tensor],
    mlm_weight: float = 0.25,
    negatives: Optional[HardNegatives] = None,
    mlm_slots: Optional[int] = None,
    itm_uniform_negatives: float = 0.0,
    keyed: Optional[KeyedDraw] = None,
) -> dict[str, torch.Tensor]:
    """The stage-3 objective on one device batch (``negatives`` fixed only in tests;
    ``keyed``: draw them, and the model's drop path and dropout, by sample id, the same on
    any number of ranks).

    ITC = mean of the V/L-FFN pair and the VL-branch pair, each over the global
    batch; hard negatives are drawn from the gathered global batch by the first
    pair's similarities; the three ITM fusion passes and the MLM pass run as one
    fused batch of ``4B``.
    """
    def keys(stream: int) -> Optional[torch.Tensor]:  # the model's draw keys in one pass (see PASSES)
        return None if keyed is None else row_keys(keyed.step_key, keyed.row_ids, stream)

    image = model.forward_image(batch["pixel_values"], with_vl=True, draw_keys=keys(PASSES["image"]))
    text = model.forward_text(batch["input_ids"], batch["attention_mask"], with_vl=True, draw_keys=keys(PASSES["text"]))
    image_cls, image_vl = model.itc_image_features(image)
    text_cls, text_vl = model.itc_text_features(text)
    itc = contrastive_loss(image_cls, text_cls, model.logit_scale)
    itc_vl = contrastive_loss(image_vl, text_vl, model.logit_vl_scale)

    if negatives is None:
        negatives = sample_hard_negatives(
            itc.logits_per_image, itc.logits_per_text, itc.targets, itm_uniform_negatives, keyed
        )
    itm = build_itm_batch(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], negatives)
    fused_keys = None
    if keyed is not None:  # rows: positives, negative images, negative texts, MLM, each keyed by its anchor
        fused_keys = torch.cat([keys(PASSES[part]) for part in ("positive", "negative_image", "negative_text", "mlm")])
    fused = model.fuse(
        torch.cat([itm.input_ids, batch["mlm_input_ids"]]),
        torch.cat([itm.attention_mask, batch["attention_mask"]]),
        torch.cat([itm.pixel_values, batch["pixel_values"]]),
        draw_keys=fused_keys,
    )
    n_itm = itm.labels.shape[0]
    itm_logits = model.itm_logits(fused.pooled[:n_itm])
    slots = default_mlm_slots(model.config.max_text_len) if mlm_slots is None else mlm_slots
    logits, labels = masked_logits(fused.text_states[n_itm:], batch["mlm_labels"], model.mlm_score, slots)

    losses = {
        "itc": 0.5 * (itc.loss + itc_vl.loss),
        "itm": itm_loss(itm_logits, itm.labels),
        "mlm": mlm_loss(logits, labels),
    }
    losses["total"] = losses["itc"] + losses["itm"] + mlm_weight * losses["mlm"]
    return losses


@registry.tasks.register("vl_pretrain")
class VLPretrainTask(RetrievalEvalMixin, VLMoTask):
    """ITC + ITM (global hard negatives) + 0.25 MLM, exactly as the official stage 3."""

    config_class = VLPretrainConfig
    model_defaults = dict(itc_head=True, itc_vl_head=True, itm_head=True, mlm_head=True)
    # Starting from a text-stage (no VL-FFN, no ITC/ITM heads) or image-stage checkpoint.
    init_allow_missing = (
        "*mlp_vl*", "*norm2_vl*", "itc_*", "logit_*", "itm_score*", "mlm_score*", "pooler*",
        "text_embeddings*", "*mlp_text*", "*norm2_text*",
    )

    def __init__(self, cfg: VLPretrainConfig, model_config: Optional[VLMoConfig] = None) -> None:
        super().__init__(cfg, model_config)
        if cfg.vl_ffn_init != "scratch":
            self.copy_expert_into_vl_ffn(cfg.vl_ffn_init)

    @torch.no_grad()
    def copy_expert_into_vl_ffn(self, source: str) -> None:
        suffix = "text" if source == "text" else "imag"
        for block in self.model.blocks:
            if block.with_vl_ffn:
                block.mlp_vl.load_state_dict(getattr(block, f"mlp_{suffix}").state_dict())
                block.norm2_vl.load_state_dict(getattr(block, f"norm2_{suffix}").state_dict())

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        batch = self.prepare(batch)
        keyed = None
        if self.draw_key is not None and "sample_index" in batch:
            ids = batch["sample_index"]
            keyed = KeyedDraw(self.draw_key, row_ids=ids, column_ids=gather_no_grad(ids))
        losses = vl_pretrain_losses(
            self.model, batch, self.cfg.mlm_weight, mlm_slots=self.cfg.mlm_slots,
            itm_uniform_negatives=self.cfg.itm_uniform_negatives, keyed=keyed,
        )
        return {"losses": losses}

    def flops_per_batch(self, batch: dict[str, Any]) -> float:
        """From shapes only (no host sync): the MLM head runs on ``mlm_slots`` positions per caption."""
        batch_size, text_len = batch["input_ids"].shape
        slots = default_mlm_slots(self.config.max_text_len) if self.cfg.mlm_slots is None else self.cfg.mlm_slots
        slots = min(text_len, slots)
        return TRAIN_MULTIPLIER * batch_size * vl_pretrain_forward_flops(self.config, text_len, slots)
