"""ITM re-ranking in the retrieval evaluation: only the top k move, the rest keep the dual-encoder order."""

from __future__ import annotations

import torch
from inference.inference_helpers import randomised, tiny_config

from vlmo_composer import VLMo
from vlmo_composer.metrics import retrieval_recall
from vlmo_composer.evaluation.rerank import rerank_candidates, reranked_scores
from vlmo_composer.evaluation.retrieval import evaluate_retrieval

NUM_IMAGES, CAPTIONS_PER_IMAGE, BATCH = 24, 2, 8


def all_captions_batches(seed: int) -> list[dict[str, torch.Tensor]]:
    """An all-captions eval loader's batches (ImageTextDataset(captions="all") layout), random content."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for start in range(0, NUM_IMAGES, BATCH):
        ids = torch.randint(1000, 3000, (BATCH, CAPTIONS_PER_IMAGE, 16), generator=g)
        batches.append({
            "sample_index": torch.arange(start, start + BATCH),
            "pixel_values": torch.randn(BATCH, 3, 32, 32, generator=g),
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "caption_mask": torch.ones(BATCH, CAPTIONS_PER_IMAGE, dtype=torch.bool),
        })
    return batches


def test_rerank_with_k_below_10_leaves_recall_past_k_to_the_dual_encoder():
    """Issue 9 item 5: with k = 4, candidates past the top 4 once got -inf, so R@5/R@10 became R@4."""
    torch.manual_seed(0)
    model = randomised(VLMo(tiny_config(init_std=0.3)), seed=1)
    batches = all_captions_batches(seed=2)
    result = evaluate_retrieval(model, lambda: batches, torch.device("cpu"), rerank_k=4)

    with torch.no_grad():
        image_feats = torch.cat([model.encode_image(b["pixel_values"]) for b in batches])
        text_feats = torch.cat([model.encode_text(b["input_ids"].flatten(0, 1), b["attention_mask"].flatten(0, 1))
                                for b in batches])
    text_to_image = torch.arange(NUM_IMAGES).repeat_interleave(CAPTIONS_PER_IMAGE)
    at_4_and_10 = retrieval_recall(image_feats, text_feats, text_to_image, ks=(4, 10))
    # The case needs hits between rank 5 and 10, or a cap at k would not show.
    assert at_4_and_10["tr_r10"] > at_4_and_10["tr_r4"] and at_4_and_10["ir_r10"] > at_4_and_10["ir_r4"]

    # The top-4 set is re-ordered, never changed: every recall at K >= 4 is the dual encoder's, exactly.
    for key in ("tr_r5", "tr_r10", "ir_r5", "ir_r10"):
        assert result.reranked[key] == result.dual[key], (key, result.reranked, result.dual)
    assert result.changed_top1 > 0  # while the top of the list did move


def test_the_rerank_rule_reorders_only_the_top_k():
    g = torch.Generator().manual_seed(3)
    dual = torch.rand(6, 20, generator=g) * 2 - 1
    dual[0, 10] = dual[0, 11]  # a tie past k stays a tie
    candidates = rerank_candidates(dual, 4)
    itm = torch.randn(6, 4, generator=g) * 5
    scores = reranked_scores(dual, candidates, itm)
    for q in range(6):
        order = scores[q].argsort(descending=True, stable=True).tolist()
        fused = (itm[q] + dual[q, candidates[q]]).argsort(descending=True).tolist()
        assert order[:4] == candidates[q][fused].tolist()  # the top k by ITM + cosine
        rest = [c for c in dual[q].argsort(descending=True, stable=True).tolist() if c not in order[:4]]
        assert order[4:] == rest  # then the dual encoder's order
        assert torch.allclose(scores[q, candidates[q]], (itm[q] + dual[q, candidates[q]]).double())
    assert scores[0, 10] == scores[0, 11]
