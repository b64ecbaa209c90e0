"""Selective activation checkpointing: keep what is expensive to recompute, recompute the rest.

A region under the ``selective`` policy keeps the outputs of its matmuls (they cost
FLOPs) and recomputes everything pointwise (LayerNorm, GELU, bias adds, layer scale,
drop path, residuals, casts) in backward. Most activation bytes are pointwise
intermediates in fp32 (autocast runs LayerNorm and the residual stream in fp32), so
this saves most of what full checkpointing saves while recomputing ~no FLOPs. The
attention kernel stays outside the regions (``MoMEBlock.forward_selective``).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

aten = torch.ops.aten

SAVED_OPS = frozenset([aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default])


def _policy(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    if op in SAVED_OPS:
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
