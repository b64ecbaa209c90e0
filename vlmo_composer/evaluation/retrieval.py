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

from vlmo_composer.evaluation.rerank import rerank_candidates, reranked_scores
from vlmo_composer.metrics import recall_from_scores, retrieval_recall
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
        cat = {k: torch.cat([part[k] for part in dist.all_gather_object(cat)]) for k in cat}
    image_ids, first = _unique_first(cat["image_ids"])
    text_ids, text_first = _unique_first(cat["text_ids"])
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


def _unique_first(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted unique ids and the first position of each (samplers may repeat samples)."""
    unique, inverse = torch.unique(ids, sorted=True, return_inverse=True)
    positions = torch.arange(len(ids))
    first = torch.full((len(unique),), len(ids), dtype=torch.long).scatter_reduce(0, inverse, positions, "amin")
    return unique, first


def chance_recall(features: RetrievalFeatures) -> dict[str, float]:
    """Expected TR@1 / IR@1 of a random ranking (for judging a small run)."""
    num_images, num_texts = len(features.image_ids), len(features.text_ids)
    captions_per_image = torch.bincount(features.text_to_image, minlength=num_images).double()
    return {"chance_tr_r1": (captions_per_image / num_texts).mean().item(), "chance_ir_r1": 1.0 / num_images}


@torch.no_grad()
def itm_rerank(
    model, features: RetrievalFeatures, loader: Iterable[dict], device: torch.device, k: int = 16, pair_batch: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-rank each query's top ``k`` with the ITM head; returns ``(scores_i2t, scores_t2i)``.

    The rule is :mod:`vlmo_composer.evaluation.rerank`'s. Images are read again from
    ``loader`` (nothing is held in memory but the caption tokens); every needed
    (image, caption) pair of both directions is fused once, in batches.
    """
    scores = features.image_feats @ features.text_feats.T  # [Ni, Nt] dual cosine similarity
    tr_top = rerank_candidates(scores, k)  # captions per image query
    ir_top = rerank_candidates(scores.T, k)  # images per caption query
    needed: dict[int, set[int]] = {}
    for image, captions in enumerate(tr_top.tolist()):
        needed.setdefault(image, set()).update(captions)
    for caption, images in enumerate(ir_top.tolist()):
        for image in images:
            needed.setdefault(image, set()).add(caption)
    itm = torch.full_like(scores, float("nan"))
    row_of_id = {int(i): r for r, i in enumerate(features.image_ids)}
    done: set[int] = set()
    for batch in loader:
        pixels = batch["pixel_values"]
        pairs = [
            (pos, row_of_id[int(i)], c)
            for pos, i in enumerate(batch["sample_index"].tolist())
            if row_of_id.get(int(i)) is not None and row_of_id[int(i)] not in done
            for c in sorted(needed.get(row_of_id[int(i)], ()))
        ]
        done.update(row_of_id[int(i)] for i in batch["sample_index"].tolist() if int(i) in row_of_id)
        for start in range(0, len(pairs), pair_batch):
            chunk = pairs[start:start + pair_batch]
            positions = torch.tensor([p for p, _, _ in chunk])
            rows = torch.tensor([r for _, r, _ in chunk])
            captions = torch.tensor([c for _, _, c in chunk])
            itm[rows, captions] = model.match_scores(
                features.input_ids[captions].to(device),
                features.attention_mask[captions].to(device),
                pixels[positions].to(device),
            ).float().cpu()
    if dist.get_world_size() > 1:  # each rank fused the pairs of the images it read: combine them
        itm = _combine_across_ranks(itm, device)
    try:
        scores_i2t = reranked_scores(scores, tr_top, itm.gather(1, tr_top))
        scores_t2i = reranked_scores(scores.T, ir_top, itm.T.gather(1, ir_top))
    except ValueError as err:
        raise RuntimeError("re-ranking missed pairs: the loader did not yield every evaluated image") from err
    return scores_i2t, scores_t2i


def _combine_across_ranks(itm: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Every rank's ITM scores in one matrix (NaN where no rank fused the pair; a pair
    fused on two ranks, when the sampler repeats an image to even out the shares, is averaged)."""
    known = ~itm.isnan()
    total = torch.where(known, itm, 0.0).to(device)
    count = known.float().to(device)
    dist.all_reduce(total)
    dist.all_reduce(count)
    return torch.where(count > 0, total / count.clamp(min=1), float("nan")).cpu()


def evaluate_retrieval(model, loader_factory, device: torch.device, rerank_k: int = 0) -> RetrievalResult:
    """Dual-encoder recalls, and with ``rerank_k > 0`` the ITM re-ranked ones too.

    ``loader_factory()`` returns a fresh all-captions loader (re-ranking reads it twice).
    """
    model.eval()
    features = collect_features(model, loader_factory(), device)
    start = time.perf_counter()
    dual = retrieval_recall(features.image_feats, features.text_feats, features.text_to_image)
    result = RetrievalResult(dual, features.seconds + time.perf_counter() - start, chance=chance_recall(features))
    if rerank_k > 0:
        start = time.perf_counter()
        scores_i2t, scores_t2i = itm_rerank(model, features, loader_factory(), device, rerank_k)
        tr = recall_from_scores(scores_i2t, features.text_to_image)
        ir = recall_from_scores(scores_t2i.T.contiguous(), features.text_to_image)
        reranked = {**{k: v for k, v in tr.items() if k.startswith("tr_")}, **{k: v for k, v in ir.items() if k.startswith("ir_")}}
        reranked["r_mean"] = sum(v for k, v in reranked.items() if k != "r_mean") / (len(reranked))
        result.reranked = reranked
        result.rerank_seconds = time.perf_counter() - start
        result.rerank_k = rerank_k
        dual_scores = features.image_feats @ features.text_feats.T
        result.changed_top1 = int((dual_scores.argmax(1) != scores_i2t.argmax(1)).sum()
                                  + (dual_scores.T.argmax(1) != scores_t2i.argmax(1)).sum())
    return result


def retrieval_record(result: RetrievalResult) -> dict[str, Any]:
    """The JSON record of one split: dual recalls, chance, and the re-ranked ones when asked."""
    record = {**result.dual, **result.chance, "seconds": round(result.dual_seconds, 2)}
    if result.reranked is not None:
        record["reranked"] = {**result.reranked, "k": result.rerank_k, "seconds": round(result.rerank_seconds, 2),
                              "changed_top1": result.changed_top1}
    return record
