"""Image-text retrieval fine-tuning (COCO, Flickr30K): dual encoder, ITC over the global batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from vlmo_composer import registry
from vlmo_composer.model import VLMoConfig
from vlmo_composer.model.flops import TRAIN_MULTIPLIER, image_tokens, projection_flops, unimodal_flops
from vlmo_composer.objectives import contrastive_loss
from vlmo_composer.tasks.base import TaskConfig, VLMoTask
from vlmo_composer.tasks.retrieval_eval import RetrievalEvalMixin

# The dual encoder never runs the VL-FFN, the pooler or the ITM head: they stay frozen
# (unused trainable parameters would stall DDP) and remain available for ITM re-ranking.
RETRIEVAL_FROZEN = ("*mlp_vl*", "*norm2_vl*", "pooler*", "itm_score*")


@dataclass
class RetrievalConfig(TaskConfig):
    pass


@registry.tasks.register("retrieval")
class RetrievalTask(RetrievalEvalMixin, VLMoTask):
    """Symmetric InfoNCE of image/text CLS projections, features gathered with gradient."""

    config_class = RetrievalConfig
    model_defaults = dict(itc_head=True, itc_vl_head=False, itm_head=True, mlm_head=False)
    # Official retrieval-fine-tuned files carry no ITM head (then re-ranking is unavailable).
    init_allow_missing = ("itm_score*",)
    init_allow_unexpected = ("itc_vl_*", "logit_vl_scale", "mlm_score*", "vqa_classifier*", "nlvr2_classifier*")

    def __init__(self, cfg: RetrievalConfig, model_config: Optional[VLMoConfig] = None) -> None:
        super().__init__(cfg, model_config)
        if cfg.trainable is None:
            import fnmatch

            for name, param in self.model.named_parameters():
                if any(fnmatch.fnmatchcase(name, p) for p in RETRIEVAL_FROZEN):
                    param.requires_grad_(False)

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        batch = self.prepare(batch)
        image = self.model.encode_image(batch["pixel_values"], draw_keys=self.draw_keys(batch, 1))
        text = self.model.encode_text(batch["input_ids"], batch["attention_mask"], draw_keys=self.draw_keys(batch, 2))
        itc = contrastive_loss(image, text, self.model.logit_scale)
        return {"losses": {"total": itc.loss, "itc": itc.loss.detach()}}

    def flops_per_batch(self, batch: dict[str, Any]) -> float:
        batch_size, text_len = batch["input_ids"].shape
        per_sample = (unimodal_flops(self.config, image_tokens(self.config), with_vl=False, image=True)
                      + unimodal_flops(self.config, text_len, with_vl=False, image=False)
                      + 2 * projection_flops(self.config))
        return TRAIN_MULTIPLIER * batch_size * per_sample
