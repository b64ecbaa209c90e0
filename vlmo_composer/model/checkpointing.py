"""Selective activation checkpointing: keep what is expensive to recompute, recompute the rest.

A checkpointed block under the ``selective`` policy keeps the outputs of its matmuls
and of the attention kernel (they cost FLOPs) and recomputes everything pointwise
(LayerNorm, GELU, bias adds, layer scale, residuals, casts, the attention mask) in
backward. Most activation bytes are pointwise intermediates in fp32 (autocast runs
LayerNorm and the residual stream in fp32), so this saves most of what full
checkpointing saves while recomputing ~no FLOPs.
"""

from __future__ import annotations

from functools import partial

import torch
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

aten = torch.ops.aten

_SAVED_OPS = [
    aten.mm.default,
    aten.addmm.default,
    aten.bmm.default,
    aten.baddbmm.default,
    aten.convolution.default,
]
for _name in (
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
):
    if hasattr(aten, _name):
        _SAVED_OPS.append(getattr(aten, _name).default)
SAVED_OPS = frozenset(_SAVED_OPS)


def _policy(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    if op in SAVED_OPS or getattr(op, "__name__", "") == "flex_attention":
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


# Callables told each new cache of kept outputs (what saved-memory measurements must count:
# these tensors bypass saved_tensors_hooks).
selective_cache_observers: list = []


def selective_context():
    contexts = create_selective_checkpoint_contexts(_policy)
    for observer in selective_cache_observers:
        observer(contexts[0].storage)
    return contexts


def checkpointed(fn, *args, policy: str = "full"):
    """``fn(*args)`` under non-reentrant checkpointing with the ``full`` or ``selective`` policy."""
    if policy == "selective":
        return checkpoint(fn, *args, use_reentrant=False, context_fn=selective_context)
    return checkpoint(fn, *args, use_reentrant=False)
