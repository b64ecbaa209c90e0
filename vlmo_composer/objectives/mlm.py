"""Masked language modeling loss over a fixed number of masked slots per caption.

The whole-word collator masks at most ``mlm_budget(T, mask_prob)`` tokens per
caption (6 of 40 at 0.15). Gathering exactly that many positions per row
(``topk`` of the mask, unmasked fillers labelled -100) keeps every shape fixed:
no boolean indexing, no data-dependent branch, hence no host-device sync and a
graph that compiles once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlmo_composer.objectives.distributed import rank_and_world, sum_no_grad

IGNORE_INDEX = -100
DEFAULT_MLM_PROB = 0.15


def mlm_budget(length: int, mask_prob: float) -> int:
    """Most tokens the whole-word collator masks in a caption of padded ``length``."""
    return max(1, int(round(length * mask_prob)))


def default_mlm_slots(text_len: int) -> int:
    """Slots per caption: the collator's cap at the recipes' masking probability."""
    return mlm_budget(text_len, DEFAULT_MLM_PROB)


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over masked tokens; 0 (with gradient) when none is masked, branch-free.

    In training on several ranks the mean is over the masked tokens of the global
    batch: each rank divides its sum by the global count (times the rank count, as
    DDP averages the ranks' gradients), so the gradient does not depend on how the
    batch is split (a per-rank mean would weight a rank's few masked tokens more).
    """
    logits = logits.reshape(-1, logits.shape[-1]).float()
    labels = labels.reshape(-1)
    total = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")
    count = (labels != IGNORE_INDEX).sum()
    _, world = rank_and_world()
    if world > 1 and torch.is_grad_enabled():  # evaluation may run on one rank: no collective there
        return total * world / sum_no_grad(count).clamp(min=1)
    return total / count.clamp(min=1)


def masked_slots(labels: torch.Tensor, num_slots: int) -> torch.Tensor:
    """``[B, num_slots]`` positions holding every masked token of each row (fillers after).

    A row with more masked tokens than slots fails a device-side assert (no sync
    on CUDA): silently dropping masked tokens would change the loss.
    """
    masked = labels != IGNORE_INDEX
    num_slots = min(num_slots, labels.shape[1])
    torch._assert_async((masked.sum(dim=1) <= num_slots).all(), "more masked tokens than MLM slots")
    return masked.to(torch.float32).topk(num_slots, dim=1, sorted=False).indices


def masked_logits(
    text_states: torch.Tensor, labels: torch.Tensor, head: torch.nn.Module, num_slots: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the (large-vocabulary) MLM ``head`` on ``num_slots`` positions per row only.

    ``head`` is a module (not a bound method) so a compiled graph guards on one object
    and does not recompile every step. Returns logits ``[B, S, V]`` and labels ``[B, S]``.
    """
    positions = masked_slots(labels, num_slots)
    states = text_states.gather(1, positions.unsqueeze(-1).expand(-1, -1, text_states.shape[-1]))
    return head(states), labels.gather(1, positions)
