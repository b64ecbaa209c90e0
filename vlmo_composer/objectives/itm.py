"""Image-text matching with global hard negatives (VLMo / ALBEF style).

For every local text one negative image, and for every local image one negative
text, is drawn from the *gathered* global batch with probability
``softmax(similarity)`` (the positive zeroed). The positive pairs and both kinds of
negatives then go through the fusion encoder as one batch.

``uniform_mix`` spreads that share of each row's sampling weight evenly over the
other pairs (0, the official choice, samples by similarity only). Measured on the
quick-start (bench/RESULTS.md "ITM in the quick-start"): with 186 steps of batch 64 the
fusion head stays at the class-prior loss 0.637 under similarity-drawn negatives (they all
share what ITC first learns, the background) and needs uniform ones to learn anything;
with the same samples in 750 steps of batch 16 it learns from the official rule alone.

Keyed draws. Given a :class:`KeyedDraw`, every row draws with its own uniform number,
a hash of (seed, step, the row's global sample id, image or text side), by inverse
CDF over its weights with the columns in sample-id order: a row picks the same
negative however the global batch is split over ranks (so also after a resume at
another world size). Without one, ``torch.multinomial`` draws from each rank's
generator, and the draws depend on the rank count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from vlmo_composer.common.keyed_draws import keyed_uniforms, splitmix64, step_key  # noqa: F401 (importable here)
from vlmo_composer.objectives.distributed import gather_no_grad


@dataclass
class HardNegatives:
    """Indices into the gathered global batch."""

    image_for_text: torch.Tensor  # [B] negative image for each local text
    text_for_image: torch.Tensor  # [B] negative text for each local image


@dataclass
class KeyedDraw:
    """What keys a step's draws: the step's key (:func:`step_key`) and global sample ids."""

    step_key: torch.Tensor  # [1] int64, from (seed, global step)
    row_ids: torch.Tensor  # [B] sample ids of the local rows
    column_ids: torch.Tensor  # [N] sample ids of the gathered global batch, in its order


def inverse_cdf_draw(weights: torch.Tensor, uniforms: torch.Tensor, column_ids: torch.Tensor) -> torch.Tensor:
    """Column drawn per row with probability proportional to ``weights`` [B, N], using
    ``uniforms`` [B]; columns are taken in ``column_ids`` order, so the draw does not
    depend on where each sample sits in the batch. A zero-weight column is never drawn."""
    order = torch.argsort(column_ids, stable=True)
    ordered = weights.double()[:, order]
    cdf = ordered.cumsum(1)
    target = (uniforms * cdf[:, -1]).unsqueeze(1)
    pos = torch.searchsorted(cdf, target, right=True).squeeze(1).clamp(max=weights.shape[1] - 1)
    # Rounding can put the target on the total: take the last column with weight instead.
    last = weights.shape[1] - 1 - (ordered > 0).flip(1).int().argmax(1)
    pos = torch.where(ordered.gather(1, pos.unsqueeze(1)).squeeze(1) > 0, pos, last)
    return order[pos]


@torch.no_grad()
def sample_hard_negatives(
    logits_per_image: torch.Tensor,
    logits_per_text: torch.Tensor,
    targets: torch.Tensor,
    uniform_mix: float = 0.0,
    keyed: Optional[KeyedDraw] = None,
) -> HardNegatives:
    """Draw one negative per local row from ``softmax(row)`` with the positive excluded
    (mixed with ``uniform_mix`` of a uniform draw over the other pairs); with ``keyed``,
    by the row's keyed number (see the module doc), else from the global generator."""
    if logits_per_image.shape[1] < 2:
        raise ValueError("hard-negative ITM needs a global batch of at least 2 pairs")
    weights_i2t = negative_weights(logits_per_image, targets, uniform_mix)
    weights_t2i = negative_weights(logits_per_text, targets, uniform_mix)
    if keyed is None:
        image_for_text = torch.multinomial(weights_t2i, 1).squeeze(1)
        text_for_image = torch.multinomial(weights_i2t, 1).squeeze(1)
    else:
        draw = keyed_uniforms(keyed.step_key, keyed.row_ids, side=0)
        image_for_text = inverse_cdf_draw(weights_t2i, draw, keyed.column_ids)
        draw = keyed_uniforms(keyed.step_key, keyed.row_ids, side=1)
        text_for_image = inverse_cdf_draw(weights_i2t, draw, keyed.column_ids)
    return HardNegatives(image_for_text, text_for_image)


def negative_weights(logits: torch.Tensor, targets: torch.Tensor, uniform_mix: float) -> torch.Tensor:
    """Per-row sampling weights: softmax of the similarities, positive zeroed, renormalised,
    then ``uniform_mix`` of the mass spread evenly over the non-positive columns."""
    rows = torch.arange(targets.shape[0], device=targets.device)
    weights = F.softmax(logits.float(), dim=1)
    weights[rows, targets] = 0
    if uniform_mix > 0:
        uniform = torch.ones_like(weights)
        uniform[rows, targets] = 0
        weights = (1 - uniform_mix) * weights / weights.sum(1, keepdim=True) + uniform_mix * uniform / uniform.sum(
            1, keepdim=True
        )
    return weights


@dataclass
class ITMBatch:
    """``3B`` fusion inputs (positives, negative images, negative texts) and labels."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pixel_values: torch.Tensor
    labels: torch.Tensor


@torch.no_grad()
def build_itm_batch(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    pixel_values: torch.Tensor,
    negatives: HardNegatives,
) -> ITMBatch:
    """Gather the raw inputs of every rank and assemble positives and negatives."""
    all_ids = gather_no_grad(input_ids)
    all_masks = gather_no_grad(attention_mask)
    all_images = gather_no_grad(pixel_values)
    batch = input_ids.shape[0]
    labels = torch.cat([input_ids.new_ones(batch), input_ids.new_zeros(2 * batch)])
    return ITMBatch(
        input_ids=torch.cat([input_ids, input_ids, all_ids[negatives.text_for_image]]),
        attention_mask=torch.cat([attention_mask, attention_mask, all_masks[negatives.text_for_image]]),
        pixel_values=torch.cat([pixel_values, all_images[negatives.image_for_text], pixel_values]),
        labels=labels,
    )


def itm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels)
