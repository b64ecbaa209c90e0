"""Pre-training objectives: ITC, ITM with global hard negatives, MLM, MIM."""

from vlmo_composer.objectives.distributed import gather_no_grad, gather_with_grad, rank_and_world
from vlmo_composer.objectives.itc import ContrastiveOutput, contrastive_loss
from vlmo_composer.objectives.itm import HardNegatives, build_itm_batch, itm_loss, sample_hard_negatives
from vlmo_composer.objectives.mim import mim_loss, normalized_patch_targets, patchify
from vlmo_composer.objectives.mlm import IGNORE_INDEX, masked_logits, mlm_loss

__all__ = [
    "ContrastiveOutput",
    "HardNegatives",
    "IGNORE_INDEX",
    "build_itm_batch",
    "contrastive_loss",
    "gather_no_grad",
    "gather_with_grad",
    "itm_loss",
    "masked_logits",
    "mim_loss",
    "mlm_loss",
    "normalized_patch_targets",
    "patchify",
    "rank_and_world",
    "sample_hard_negatives",
]
