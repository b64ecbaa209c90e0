"""Attention kernels with VLMo's bias: a gathered relative-position bias plus key padding.

Two interchangeable paths over the same :class:`AttentionBias` parts:

* ``sdpa``: ``scaled_dot_product_attention`` with a dense additive mask, built per
  layer in the compute dtype with its rows padded to a multiple of 16 elements (the
  alignment the memory-efficient CUDA kernel needs; an unaligned mask is copied by
  SDPA at every call). Any device; the only path the CPU runs fast.
* ``flex``: ``torch.nn.attention.flex_attention`` with a ``score_mod`` that adds the
  table entry of each (query, key) and masks padded keys: no ``[B, H, N, N]`` mask
  is ever built or saved, and the relative table gets its gradient through the
  captured tensor. Compiled on CUDA (the default there); eager elsewhere (a
  reference implementation: correct, slow, memory-hungry; tests only).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

ATTENTION_KINDS = ("auto", "sdpa", "flex")
MASK_ALIGNMENT = 16  # elements: mask rows of the memory-efficient SDPA kernel


def padded_length(n: int) -> int:
    return -(-n // MASK_ALIGNMENT) * MASK_ALIGNMENT


class AttentionBias(NamedTuple):
    """One layer's attention bias, kept as its small parts.

    ``table``: this layer's columns of the relative table ``[rows, H]``;
    ``index``: table row of each (query, key) ``[N, padded_length(N)]`` (padding
    columns point at row 0 and are sliced off); ``key_valid``: ``[B, N]`` bool,
    False at padded keys. Either part may be ``None``.
    """

    table: Optional[torch.Tensor]
    index: Optional[torch.Tensor]
    key_valid: Optional[torch.Tensor]

    def dense_mask(self, dtype: torch.dtype) -> Optional[torch.Tensor]:
        """``[B|1, H|1, N, N]`` additive mask, a view of an aligned ``[..., N, padded]`` buffer."""
        parts = []
        if self.table is not None:
            parts.append(self.table.to(dtype).t()[:, self.index].unsqueeze(0))  # [1, H, N, padded], contiguous
        if self.key_valid is not None:
            n = self.key_valid.shape[1]
            valid = F.pad(self.key_valid, (0, padded_length(n) - n), value=True)
            padding = torch.zeros(valid.shape, dtype=dtype, device=valid.device)
            parts.append(padding.masked_fill(~valid, float("-inf"))[:, None, None, :])
        if not parts:
            return None
        mask = parts[0] if len(parts) == 1 else parts[0] + parts[1]
        n = mask.shape[-2]
        return mask[..., :n]

    def score_mod(self):
        """FlexAttention score modification adding the bias and masking padded keys."""
        table, index, key_valid = self.table, self.index, self.key_valid

        def score_mod(score, b, h, q_idx, kv_idx):
            if table is not None:
                score = score + table[index[q_idx, kv_idx], h]
            if key_valid is not None:
                score = torch.where(key_valid[b, kv_idx], score, float("-inf"))
            return score

        return score_mod


def resolve_attention(kind: str, device: torch.device) -> str:
    """``auto``: flex on CUDA (with a compiler), SDPA elsewhere."""
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"attention '{kind}' is not one of {ATTENTION_KINDS}")
    if kind == "auto":
        return "flex" if device.type == "cuda" else "sdpa"
    return kind


_compiled_flex = None


def _flex_attention():
    """flex_attention itself inside a compiled graph or off CUDA, else a compiled copy (its fused kernel)."""
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention

    if torch.compiler.is_compiling():
        return flex_attention
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: Optional[AttentionBias], kind: str) -> torch.Tensor:
    """Attention of ``[B, H, N, d]`` inputs by the resolved ``kind`` (``sdpa`` | ``flex``)."""
    if kind == "flex":
        from torch.nn.attention.flex_attention import flex_attention

        if bias is None:
            return F.scaled_dot_product_attention(q, k, v)
        fn = _flex_attention() if q.device.type == "cuda" else flex_attention
        return fn(q, k, v, score_mod=bias.score_mod())
    return F.scaled_dot_product_attention(q, k, v, attn_mask=None if bias is None else bias.dense_mask(q.dtype))
