"""Masked language modeling loss (labels -100 outside the masked positions)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over masked tokens; 0 (with gradient) when none is masked."""
    logits = logits.reshape(-1, logits.shape[-1]).float()
    labels = labels.reshape(-1)
    if not (labels != IGNORE_INDEX).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)


def masked_logits(text_states: torch.Tensor, labels: torch.Tensor, head) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the (large-vocabulary) MLM head only on masked positions: same loss, far less work."""
    selected = labels != IGNORE_INDEX
    return head(text_states[selected]), labels[selected]
