"""Stage 1: vision pre-training by masked image modeling (or BEiT weights via init_from)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn as nn

from vlmo_composer import registry
from vlmo_composer.model import VLMoConfig
from vlmo_composer.model.flops import TRAIN_MULTIPLIER, image_tokens, unimodal_flops
from vlmo_composer.objectives import mim_loss, normalized_patch_targets
from vlmo_composer.tasks.base import TaskConfig, VLMoTask

# Attention, norm1, layer scales, patch embedding, CLS, the V-FFN, the image
# modality embedding, the relative table (image rows are all an image pass uses)
# and the final norm; plus this task's mask token and regression head.
VISION_STAGE_TRAINABLE = (
    "transformer.cls_token",
    "transformer.pos_embed",
    "transformer.patch_embed.*",
    "transformer.blocks.*.norm1.*",
    "transformer.blocks.*.attn.*",
    "transformer.blocks.*.gamma_*",
    "transformer.blocks.*.norm2_imag.*",
    "transformer.blocks.*.mlp_imag.*",
    "transformer.norm.*",
    "token_type_embeddings.*",
    "relative_position_bias_table",
)


@dataclass
class VisionMIMConfig(TaskConfig):
    pass


@registry.tasks.register("vision_mim")
class VisionMIMTask(VLMoTask):
    """Regress per-patch normalised pixels of blockwise-masked patches from the final states.

    The dataloader supplies ``mim_mask [B, P]`` (BEiT blockwise masking, ~40% of
    patches); masked patch embeddings are replaced by a learned ``mask_token``.
    """

    config_class = VisionMIMConfig
    model_defaults = dict(without_vl_ffn=True, itc_head=False, itc_vl_head=False, itm_head=False, mlm_head=False)
    default_trainable = VISION_STAGE_TRAINABLE

    def __init__(self, cfg: VisionMIMConfig, model_config: Optional[VLMoConfig] = None) -> None:
        super().__init__(cfg, model_config)
        dim, patch = self.config.hidden_size, self.config.patch_size
        self.mim_mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.mim_mask_token, std=self.config.init_std)
        self.mim_head = nn.Linear(dim, patch * patch * self.config.in_chans)
        nn.init.trunc_normal_(self.mim_head.weight, std=self.config.init_std)
        nn.init.zeros_(self.mim_head.bias)

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        pixels, mask = batch["pixel_values"], batch["mim_mask"].bool()
        embeds = self.model.embed_image(pixels, patch_mask=mask, mask_token=self.mim_mask_token)
        states = self.model.forward_image(None, image_embeds=embeds, draw_keys=self.draw_keys(batch)).states[:, 1:]
        targets = normalized_patch_targets(pixels, self.config.patch_size)
        loss = mim_loss(self.mim_head(states), targets, mask)
        return {"losses": {"total": loss, "mim": loss.detach()}}

    def flops_per_batch(self, batch: dict[str, Any]) -> float:
        batch_size = batch["pixel_values"].shape[0]
        head = 2 * self.config.num_patches * self.config.hidden_size * self.mim_head.out_features
        per_sample = unimodal_flops(self.config, image_tokens(self.config), with_vl=False, image=True) + head
        return TRAIN_MULTIPLIER * batch_size * per_sample
