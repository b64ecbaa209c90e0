"""ITM re-ranking in the retrieval evaluation: only the top k move, the rest keep the dual-encoder order."""

from __future__ import annotations

import pytest
import torch
from inference.inference_helpers import randomised, tiny_config

from vlmo_composer import VLMo
from vlmo_composer.metrics import rank_queries, recall_from_ranks, recall_from_scores, retrieval_recall
from vlmo_composer.evaluation.rerank import rerank_candidates, reranked_ranks, reranked_scores
from vlmo_composer.evaluation.retrieval import collect_features, evaluate_retrieval

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


def full_matrix_reranked_recalls(dual: torch.Tensor, itm: torch.Tensor, text_to_image: torch.Tensor, k: int) -> dict:
    """The re-ranked recalls as computed before streaming: whole ``[Ni, Nt]`` matrices, ITM of every pair."""
    tr_top, ir_top = rerank_candidates(dual, k), rerank_candidates(dual.T, k)
    tr = recall_from_scores(reranked_scores(dual, tr_top, itm.gather(1, tr_top)), text_to_image)
    ir = recall_from_scores(reranked_scores(dual.T, ir_top, itm.T.gather(1, ir_top)).T.contiguous(), text_to_image)
    recalls = {**{key: v for key, v in tr.items() if key.startswith("tr_")}, **{key: v for key, v in ir.items() if key.startswith("ir_")}}
    recalls["r_mean"] = sum(recalls.values()) / len(recalls)
    return recalls


def streamed_reranked_recalls(image_feats, text_feats, itm, text_to_image, k, chunk_size, gallery_chunk) -> dict:
    images = torch.arange(len(image_feats))
    tr = rank_queries(image_feats, text_feats, images, text_to_image, k, chunk_size, gallery_chunk)
    ir = rank_queries(text_feats, image_feats, text_to_image, images, k, chunk_size, gallery_chunk)
    tr_fused = itm.gather(1, tr.top_indices).double() + tr.top_scores.double()
    ir_fused = itm.T.gather(1, ir.top_indices).double() + ir.top_scores.double()
    tr_ranks = reranked_ranks(tr.ranks, text_to_image[tr.top_indices] == images[:, None], tr_fused)
    ir_ranks = reranked_ranks(ir.ranks, ir.top_indices == text_to_image[:, None], ir_fused)
    return recall_from_ranks(tr_ranks, ir_ranks)


@pytest.mark.parametrize("k", [1, 4, 16, 200])
@pytest.mark.parametrize("seed", range(3))
def test_streamed_rerank_equals_the_full_matrix_rerank(seed, k):
    """Issue 19: the top k of rank_queries and the rank rule give the full-matrix re-ranked recalls."""
    g = torch.Generator().manual_seed(seed)
    num_images, captions = 31, 5
    text_to_image = torch.arange(num_images).repeat_interleave(captions)[torch.randperm(num_images * captions, generator=g)]
    image_feats = torch.nn.functional.normalize(torch.randn(num_images, 8, generator=g), dim=1)
    text_feats = torch.nn.functional.normalize(torch.randn(len(text_to_image), 8, generator=g), dim=1)
    text_feats[::3] = image_feats[text_to_image[::3]] + 0.3 * text_feats[::3]  # some hits, so the test means something
    itm = torch.randn(num_images, len(text_to_image), generator=g) * 2
    expected = full_matrix_reranked_recalls(image_feats @ text_feats.T, itm, text_to_image, k)
    for chunk_size, gallery_chunk in ((1, 1), (7, 11), (512, 65536)):
        got = streamed_reranked_recalls(image_feats, text_feats, itm, text_to_image, k, chunk_size, gallery_chunk)
        assert got == expected, (chunk_size, gallery_chunk)
    assert 0 < expected["tr_r1"] < 1


def test_evaluate_retrieval_reranks_as_the_full_matrix_did(k=4):
    torch.manual_seed(0)
    model = randomised(VLMo(tiny_config(init_std=0.3)), seed=1)
    batches = all_captions_batches(seed=2)
    result = evaluate_retrieval(model, lambda: batches, torch.device("cpu"), rerank_k=k)
    features = collect_features(model, batches, torch.device("cpu"))
    with torch.no_grad():
        itm = torch.stack([
            model.match_scores(features.input_ids, features.attention_mask,
                               b["pixel_values"][i:i + 1].expand(len(features.input_ids), -1, -1, -1)).float()
            for b in batches for i in range(len(b["pixel_values"]))
        ])
    dual = features.image_feats @ features.text_feats.T
    assert result.reranked == full_matrix_reranked_recalls(dual, itm, features.text_to_image, k)
    assert result.dual == retrieval_recall(features.image_feats, features.text_feats, features.text_to_image)
