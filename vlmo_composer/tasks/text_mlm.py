"""Stage 2: language pre-training on text-only data with the vision side frozen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlmo_composer import registry
from vlmo_composer.model.flops import TRAIN_MULTIPLIER, mlm_head_flops, unimodal_flops
from vlmo_composer.objectives import masked_logits, mlm_loss
from vlmo_composer.objectives.mlm import default_mlm_slots
from vlmo_composer.tasks.base import TaskConfig, VLMoTask

# What the language stage trains (DESIGN section 4). The relative table is one
# parameter, but a text-only pass only indexes its text rows, and it is exempt from
# weight decay, so its image rows stay exactly as loaded. The BERT position table
# is not used under relative positions and stays frozen.
TEXT_STAGE_TRAINABLE = (
    "text_embeddings.word_embeddings.*",
    "text_embeddings.token_type_embeddings.*",
    "text_embeddings.LayerNorm.*",
    "token_type_embeddings.*",
    "transformer.blocks.*.norm2_text.*",
    "transformer.blocks.*.mlp_text.*",
    "mlm_score.*",
    "relative_position_bias_table",
    "transformer.norm.*",
)


@dataclass
class TextMLMConfig(TaskConfig):
    pass


@registry.tasks.register("text_mlm")
class TextMLMTask(VLMoTask):
    """Whole-word-masked MLM on text of length 196 through the L-FFN; everything else frozen."""

    config_class = TextMLMConfig
    # As the official text stage: no VL-FFN yet, only the MLM head.
    model_defaults = dict(
        max_text_len=196, without_vl_ffn=True, itc_head=False, itc_vl_head=False, itm_head=False, mlm_head=True
    )
    default_trainable = TEXT_STAGE_TRAINABLE
    init_allow_missing = ("text_embeddings*", "*mlp_text*", "*norm2_text*", "mlm_score*", "pooler*")
    init_allow_unexpected = ("*mlp_vl*", "*norm2_vl*", "itc_*", "logit_*", "itm_score*", "mim_*")

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        batch = self.prepare(batch)
        text = self.model.forward_text(batch["mlm_input_ids"], batch["attention_mask"], draw_keys=self.draw_keys(batch))
        slots = default_mlm_slots(self.config.max_text_len)
        logits, labels = masked_logits(text.states, batch["mlm_labels"], self.model.mlm_score, slots)
        loss = mlm_loss(logits, labels)
        return {"losses": {"total": loss, "mlm": loss.detach()}}

    def flops_per_batch(self, batch: dict[str, Any]) -> float:
        batch_size, text_len = batch["mlm_input_ids"].shape
        slots = min(text_len, default_mlm_slots(self.config.max_text_len))  # the MLM head's fixed positions
        per_sample = unimodal_flops(self.config, text_len, with_vl=False, image=False) + mlm_head_flops(self.config, slots)
        return TRAIN_MULTIPLIER * batch_size * per_sample
