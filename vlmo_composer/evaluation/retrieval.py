"""Image-text retrieval evaluation: dual-encoder ranking, then optional ITM re-ranking.

An evaluation batch comes from ``ImageTextDataset(captions="all")``: each image
with every caption (``input_ids [B, K, T]`` + ``caption_mask [B, K]``). Images and
captions are encoded separately and identified by ids, so ``RetrievalRecall``
can de-duplicate what samplers repeat across ranks (the in-training evaluation of
stage 3 and the retrieval fine-tune,
:class:`vlmo_composer.tasks.retrieval_eval.RetrievalEvalMixin`; this module reads
the same features with :func:`~vlmo_composer.tasks.retrieval_eval.retrieval_batch_features`).

The unified model can also re-rank: rank everything with the cheap dual encoder,
then re-score each query's top ``k`` with the fusion encoder's ITM head (the rule
of :mod:`vlmo_composer.evaluation.rerank`). The official code computes the first;
:func:`evaluate_retrieval` reports both, with their time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import torch
from composer.utils import dist

from vlmo_composer.evaluation.ranks import unique_first
from vlmo_composer.evaluation.rerank import reranked_ranks, reranked_top1
from vlmo_composer.metrics import Ranking, chance_recall, rank_queries, recall_from_ranks
from vlmo_composer.tasks.retrieval_eval import retrieval_batch_features


@dataclass
class RetrievalFeatures:
    """Everything the two stages need, rows sorted by image / caption id."""

    image_feats: torch.Tensor  # [Ni, D]
    image_ids: torch.Tensor  # [Ni]
    text_feats: torch.Tensor  # [Nt, D]
    text_ids: torch.Tensor  # [Nt]
    text_to_image: torch.Tensor  # [Nt] row in image_feats
    input_ids: torch.Tensor  # [Nt, T] caption tokens, for the fusion encoder
    attention_mask: torch.Tensor  # [Nt, T]
    seconds: float = 0.0


@dataclass
class RetrievalResult:
    dual: dict[str, float]
    dual_seconds: float
    reranked: Optional[dict[str, float]] = None
    rerank_seconds: float = 0.0
    rerank_k: int = 0
    chance: dict[str, float] = field(default_factory=dict)
    changed_top1: int = 0  # queries whose top-1 changed under re-ranking
    samples: int = 0  # distinct images of the split


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.no_grad()
def collect_features(model, loader: Iterable[dict], device: torch.device) -> RetrievalFeatures:
    """Encode every image and caption of an all-captions loader (one pass)."""
    start = time.perf_counter()
    parts: dict[str, list] = {k: [] for k in ("image_feats", "image_ids", "text_feats", "text_ids", "text_image_ids", "ids", "mask")}
    for batch in loader:
        batch = _to(batch, device)
        out = retrieval_batch_features(model, batch)
        for key in ("image_feats", "image_ids", "text_feats", "text_ids", "text_image_ids"):
            parts[key].append(out[key].cpu())
        keep = batch["caption_mask"].reshape(-1)
        parts["ids"].append(batch["input_ids"].flatten(0, 1)[keep].cpu())
        parts["mask"].append(batch["attention_mask"].flatten(0, 1)[keep].cpu())
    cat = {k: torch.cat(v) for k, v in parts.items()}
    if dist.get_world_size() > 1:  # each rank read its share of the split: score the whole of it
        gathered = dist.all_gather_object(cat)  # once: inside the comprehension it ran once per key
        cat = {k: torch.cat([part[k] for part in gathered]) for k in cat}
    image_ids, first = unique_first(cat["image_ids"])
    text_ids, text_first = unique_first(cat["text_ids"])
    text_image_ids = cat["text_image_ids"][text_first]
    return RetrievalFeatures(
        image_feats=cat["image_feats"][first],
        image_ids=image_ids,
        text_feats=cat["text_feats"][text_first],
        text_ids=text_ids,
        text_to_image=torch.searchsorted(image_ids, text_image_ids),
        input_ids=cat["ids"][text_first],
        attention_mask=cat["mask"][text_first],
        seconds=time.perf_counter() - start,
    )


def chance_of(features: RetrievalFeatures) -> dict[str, float]:
    """Expected TR@1 / IR@1 of a random ranking (for judging a small run)."""
    return chance_recall(features.text_to_image, len(features.image_ids))


def dual_rankings(features: RetrievalFeatures, k: int = 0) -> tuple[Ranking, Ranking]:
    """Image queries over captions and caption queries over images, each with its top ``k``."""
    images = torch.arange(len(features.image_feats))
    tr = rank_queries(features.image_feats, features.text_feats, images, features.text_to_image, k)
    ir = rank_queries(features.text_feats, features.image_feats, features.text_to_image, images, k)
    return tr, ir


@torch.no_grad()
def itm_rerank(
    model, features: RetrievalFeatures, tr_top: torch.Tensor, ir_top: torch.Tensor, loader: Iterable[dict],
    device: torch.device, pair_batch: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ITM match logits of every query's candidates: ``([Ni, k] for tr_top, [Nt, k] for ir_top)``.

    ``tr_top`` holds caption rows per image query, ``ir_top`` image rows per caption
    query. Images are read again from ``loader`` (nothing is held in memory but the
    caption tokens); each distinct (image, caption) pair of both directions is
    fused once, in batches, and only the candidate pairs are stored.
    """
    num_texts = len(features.text_feats)
    images = torch.arange(len(tr_top))[:, None].expand_as(tr_top)
    keys = torch.cat([(images * num_texts + tr_top).flatten(), (ir_top * num_texts + torch.arange(num_texts)[:, None]).flatten()])
    pairs, slot = torch.unique(keys, sorted=True, return_inverse=True)  # by image, then caption
    itm = torch.full((len(pairs),), float("nan"))
    row_of_id = {int(i): r for r, i in enumerate(features.image_ids)}
    done: set[int] = set()
    for batch in loader:
        todo = []  # (position in batch, pair index), images in batch order, captions ascending
        for pos, image_id in enumerate(batch["sample_index"].tolist()):
            row = row_of_id.get(int(image_id))
            if row is None or row in done:
                continue
            done.add(row)
            first, last = torch.searchsorted(pairs, torch.tensor([row * num_texts, (row + 1) * num_texts])).tolist()
            todo.extend((pos, p) for p in range(first, last))
        for start in range(0, len(todo), pair_batch):
            positions, chunk = (torch.tensor(column) for column in zip(*todo[start:start + pair_batch]))
            captions = pairs[chunk] % num_texts
            itm[chunk] = model.match_scores(
                features.input_ids[captions].to(device),
                features.attention_mask[captions].to(device),
                batch["pixel_values"][positions].to(device),
            ).float().cpu()
    if dist.get_world_size() > 1:  # each rank fused the pairs of the images it read: combine them
        itm = _combine_across_ranks(itm, device)
    itm_tr, itm_ir = itm[slot].split([tr_top.numel(), ir_top.numel()])
    return itm_tr.view_as(tr_top), itm_ir.view_as(ir_top)


def _combine_across_ranks(itm: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Every rank's ITM scores in one tensor (NaN where no rank fused the pair; a pair
    fused on two ranks, when the sampler repeats an image to even out the shares, is averaged)."""
    known = ~itm.isnan()
    total = torch.where(known, itm, 0.0).to(device)
    count = known.float().to(device)
    dist.all_reduce(total)
    dist.all_reduce(count)
    return torch.where(count > 0, total / count.clamp(min=1), float("nan")).cpu()


def _reranked(ranking: Ranking, positive: torch.Tensor, itm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-ranked ranks and top-1 of one direction, by :mod:`vlmo_composer.evaluation.rerank`'s rule."""
    fused = itm.double() + ranking.top_scores.double()
    try:
        ranks = reranked_ranks(ranking.ranks, positive, fused)
    except ValueError as err:
        raise RuntimeError("re-ranking missed pairs: the loader did not yield every evaluated image") from err
    return ranks, reranked_top1(ranking.top_indices, fused)


def evaluate_retrieval(model, loader_factory, device: torch.device, rerank_k: int = 0) -> RetrievalResult:
    """Dual-encoder recalls, and with ``rerank_k > 0`` the ITM re-ranked ones too.

    ``loader_factory()`` returns a fresh all-captions loader (re-ranking reads it twice).
    Scores are streamed (:func:`~vlmo_composer.metrics.rank_queries`): no ``[images,
    captions]`` matrix is built, only each query's rank and top ``rerank_k``.
    """
    model.eval()
    features = collect_features(model, loader_factory(), device)
    start = time.perf_counter()
    tr, ir = dual_rankings(features, rerank_k)
    dual = recall_from_ranks(tr.ranks, ir.ranks)
    result = RetrievalResult(dual, features.seconds + time.perf_counter() - start, chance=chance_of(features),
                             samples=len(features.image_ids))
    if rerank_k > 0:
        start = time.perf_counter()
        itm_tr, itm_ir = itm_rerank(model, features, tr.top_indices, ir.top_indices, loader_factory(), device)
        images = torch.arange(len(features.image_feats))
        tr_ranks, tr_top1 = _reranked(tr, features.text_to_image[tr.top_indices] == images[:, None], itm_tr)
        ir_ranks, ir_top1 = _reranked(ir, ir.top_indices == features.text_to_image[:, None], itm_ir)
        result.reranked = recall_from_ranks(tr_ranks, ir_ranks)
        result.rerank_seconds = time.perf_counter() - start
        result.rerank_k = rerank_k
        result.changed_top1 = int((tr.top_indices[:, 0] != tr_top1).sum() + (ir.top_indices[:, 0] != ir_top1).sum())
    return result


def retrieval_record(result: RetrievalResult) -> dict[str, Any]:
    """The JSON record of one split: dual recalls, chance, and the re-ranked ones when asked."""
    record = {**result.dual, **result.chance, "seconds": round(result.dual_seconds, 2)}
    if result.reranked is not None:
        record["reranked"] = {**result.reranked, "k": result.rerank_k, "seconds": round(result.rerank_seconds, 2),
                              "changed_top1": result.changed_top1}
    return record
