"""The re-ranking rule, shared by the retrieval evaluation and the inference API.

The dual encoder ranks the whole gallery; each query's top ``k`` candidates are
then re-scored by the fusion encoder as ``ITM match logit + cosine`` (the
unified model's use of its two encoders). Past the top ``k`` the dual-encoder
order is kept, below every re-scored candidate: re-ranking only re-orders the
top ``k``, so recall at any K >= k equals the dual encoder's.
"""

from __future__ import annotations

import torch


def rerank_candidates(dual_scores: torch.Tensor, k: int) -> torch.Tensor:
    """``[Q, min(k, G)]`` gallery columns of each query's top ``k`` by the dual encoder."""
    if k < 1:
        raise ValueError(f"the re-rank depth k must be >= 1, got {k}")
    return dual_scores.topk(min(k, dual_scores.shape[1]), dim=1).indices


def reranked_scores(dual_scores: torch.Tensor, candidates: torch.Tensor, itm_logits: torch.Tensor) -> torch.Tensor:
    """``[Q, G]`` float64 scores whose ranking is the re-ranked one.

    Args:
        dual_scores: ``[Q, G]`` cosine similarities of every (query, gallery) pair.
        candidates: ``[Q, k]`` from :func:`rerank_candidates`.
        itm_logits: ``[Q, k]`` ITM match logit of each (query, candidate) pair.

    Candidates score ``itm + cosine``; every other entry keeps its cosine, shifted
    by one constant per row to sit below the lowest candidate (float64, so the shift
    neither merges nor splits ties of the float32 cosines).
    """
    if itm_logits.shape != candidates.shape:
        raise ValueError(f"itm_logits {tuple(itm_logits.shape)} must match candidates {tuple(candidates.shape)}")
    dual = dual_scores.double()
    fused = itm_logits.double() + dual.gather(1, candidates)
    if torch.isnan(fused).any():
        raise ValueError("re-ranking has no ITM score for some candidates")
    rows = torch.arange(len(dual))[:, None]
    others = torch.ones_like(dual, dtype=torch.bool)
    others[rows, candidates] = False
    ceiling = fused.min(dim=1, keepdim=True).values - 1.0  # strictly below every re-scored candidate
    top_other = dual.masked_fill(~others, float("-inf")).max(dim=1, keepdim=True).values
    shift = torch.where(torch.isfinite(top_other), ceiling - top_other, torch.zeros_like(ceiling))
    scores = torch.where(others, dual + shift, torch.zeros_like(dual))
    scores[rows, candidates] = fused
    return scores


def reranked_ranks(dual_ranks: torch.Tensor, positive: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
    """Each query's rank under :func:`reranked_scores`, from its top ``k`` alone (no ``[Q, G]`` matrix).

    Args:
        dual_ranks: ``[Q]`` negatives scoring >= the best positive by the dual encoder.
        positive: ``[Q, k]`` whether each candidate is a positive of its query.
        fused: ``[Q, k]`` ITM logit + cosine of each candidate.

    Everything past the top ``k`` sits below every candidate. With a positive among
    the candidates, the rank counts the negative candidates fused >= its best one.
    Without, all ``k`` candidates are negatives above it and the rest keep the dual
    order, so the rank is the dual one.
    """
    if torch.isnan(fused).any():
        raise ValueError("re-ranking has no ITM score for some candidates")
    best = fused.masked_fill(~positive, float("-inf")).amax(dim=1, keepdim=True)
    among_candidates = ((fused >= best) & ~positive).sum(dim=1)
    return torch.where(positive.any(dim=1), among_candidates, dual_ranks)


def reranked_top1(candidates: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
    """``[Q]`` the first gallery row after re-ranking: the best fused candidate, ties to the lower index."""
    best = fused.amax(dim=1, keepdim=True)
    return candidates.masked_fill(fused < best, torch.iinfo(candidates.dtype).max).amin(dim=1)
