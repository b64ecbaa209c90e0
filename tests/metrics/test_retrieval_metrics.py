"""Retrieval recall against plain reference computations (ties included)."""

from __future__ import annotations

import pytest
import torch

from vlmo_composer.metrics import RetrievalRecall, recall_from_scores, recall_keys, retrieval_recall

CAPTIONS_PER_IMAGE = 5


def reference_recall(
    scores: torch.Tensor, text_to_image: list[int], ks=(1, 5, 10)
) -> dict[str, float]:
    """Loop-by-loop statement of the rule: rank = #negatives scoring >= the best positive."""
    num_images, num_texts = scores.shape
    s = scores.tolist()
    tr_ranks = []
    for i in range(num_images):
        best = max(s[i][t] for t in range(num_texts) if text_to_image[t] == i)
        tr_ranks.append(
            sum(1 for t in range(num_texts) if text_to_image[t] != i and s[i][t] >= best)
        )
    ir_ranks = []
    for t in range(num_texts):
        own = s[text_to_image[t]][t]
        ir_ranks.append(
            sum(1 for i in range(num_images) if i != text_to_image[t] and s[i][t] >= own)
        )
    out = {f"tr_r{k}": sum(r < k for r in tr_ranks) / num_images for k in ks}
    out.update({f"ir_r{k}": sum(r < k for r in ir_ranks) / num_texts for k in ks})
    out["r_mean"] = sum(out.values()) / len(out)
    return out


def vlmo_irtr_recall(scores: torch.Tensor, tiids: torch.Tensor) -> dict[str, float]:
    """microsoft/unilm ``vlmo/vlmo/modules/objectives.py``, ``compute_irtr_recall``, its steps:
    ``scores = img_cls_feats @ txt_cls_feats.t()`` ([images, texts]); TR@k: an image is a hit
    when its id is among the image ids of its ``topk(k, dim=1)`` texts; IR@k: a text is a hit
    when its image id is among its ``topk(k, dim=0)`` images; each averaged."""
    iids = torch.arange(scores.shape[0])
    out = {}
    for k in (1, 5, 10):
        topk_iids = tiids[scores.topk(k, dim=1).indices]
        out[f"tr_r{k}"] = (iids.unsqueeze(1) == topk_iids).float().max(dim=1)[0].mean().item()
    for k in (1, 5, 10):
        topk_iids = iids[scores.topk(k, dim=0).indices]
        out[f"ir_r{k}"] = (tiids.unsqueeze(0) == topk_iids).float().max(dim=0)[0].mean().item()
    return out


def clip_benchmark_recall(scores: torch.Tensor, tiids: torch.Tensor, batch_size: int) -> dict[str, float]:
    """LAION-AI/CLIP_benchmark ``clip_benchmark/metrics/zeroshot_retrieval.py``, ``evaluate`` with
    ``recall_at_k`` and ``batchify``, its steps: text x image scores and a positive-pair mask;
    per query row (in chunks of ``batch_size``), true positives among the top k over the number
    of positives; a query counts when that recall is > 0. Its "image_retrieval" queries with
    texts (our IR), its "text_retrieval" with images (our TR)."""

    def recall_at_k(s: torch.Tensor, positive: torch.Tensor, k: int) -> torch.Tensor:
        onehot = torch.nn.functional.one_hot(s.topk(k, dim=1)[1], num_classes=s.shape[1])
        true_positive = (onehot * positive.view(len(s), 1, s.shape[1])).sum(dim=(1, 2))
        return true_positive / positive.sum(dim=1)

    def batchify(s: torch.Tensor, positive: torch.Tensor, k: int) -> torch.Tensor:
        return torch.cat([recall_at_k(s[i : i + batch_size], positive[i : i + batch_size], k)
                          for i in range(0, len(s), batch_size)])

    text_scores = scores.T  # texts_emb @ images_emb.t()
    positive = torch.zeros_like(text_scores, dtype=torch.bool)
    positive[torch.arange(len(text_scores)), tiids] = True
    out = {}
    for k in (1, 5, 10):
        out[f"tr_r{k}"] = (batchify(text_scores.T, positive.T, k) > 0).float().mean().item()
    for k in (1, 5, 10):
        out[f"ir_r{k}"] = (batchify(text_scores, positive, k) > 0).float().mean().item()
    return out


def shuffled_captions(num_images: int, generator: torch.Generator) -> torch.Tensor:
    """Image index of each caption, 5 per image, in random caption order."""
    text_to_image = torch.arange(num_images).repeat_interleave(CAPTIONS_PER_IMAGE)
    return text_to_image[torch.randperm(len(text_to_image), generator=generator)]


@pytest.mark.parametrize("seed", range(4))
def test_recall_from_scores_equals_reference_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    num_images = 13
    text_to_image = shuffled_captions(num_images, g)
    # Four score levels over 13 x 65 pairs: ties everywhere, including positive-negative ties.
    scores = torch.randint(0, 4, (num_images, len(text_to_image)), generator=g).float()
    got = recall_from_scores(scores, text_to_image, chunk_size=4)
    assert got == reference_recall(scores, text_to_image.tolist())
    assert list(got) == recall_keys()


@pytest.mark.parametrize("seed", range(3))
def test_without_ties_equals_vlmo_and_clip_benchmark(seed):
    # One shared score matrix, 5 captions per image in random order, no ties; our rank rule
    # in chunks of 7 rows, CLIP_benchmark's in chunks of 16.
    g = torch.Generator().manual_seed(100 + seed)
    text_to_image = shuffled_captions(20, g)
    scores = torch.randn(20, len(text_to_image), generator=g, dtype=torch.float64)
    assert scores.flatten().unique().numel() == scores.numel()
    got = recall_from_scores(scores, text_to_image, chunk_size=7)
    ours = {k: got[k] for k in got if k != "r_mean"}
    assert ours == pytest.approx(vlmo_irtr_recall(scores, text_to_image), abs=1e-7)
    assert ours == pytest.approx(clip_benchmark_recall(scores, text_to_image, batch_size=16), abs=1e-7)
    # Sanity: random scores are far from perfect, so the comparison is not vacuous.
    assert 0 < got["tr_r10"] < 1 and 0 < got["ir_r5"] < 1


def test_hand_worked_example():
    scores = torch.tensor([[0.9, 0.1, 0.8, 0.3], [0.2, 0.7, 0.95, 0.4]])
    got = recall_from_scores(scores, torch.tensor([0, 0, 1, 1]), ks=(1, 2))
    # TR: both images' best caption is their own (0.9 and 0.95). IR: caption 1 (0.1 vs 0.7) is
    # beaten by image 1; the others win.
    assert got == {"tr_r1": 1.0, "tr_r2": 1.0, "ir_r1": 0.75, "ir_r2": 1.0, "r_mean": 3.75 / 4}


def test_ties_count_against_the_query():
    # A collapsed model: every pair scores the same. Each image has 10 tied negatives ahead of
    # it (rank 10), each caption 2 (rank 2).
    text_to_image = torch.arange(3).repeat_interleave(CAPTIONS_PER_IMAGE)
    got = recall_from_scores(torch.ones(3, 15), text_to_image)
    assert got == {
        "tr_r1": 0.0, "tr_r5": 0.0, "tr_r10": 0.0,
        "ir_r1": 0.0, "ir_r5": 1.0, "ir_r10": 1.0,
        "r_mean": 2 / 6,
    }  # fmt: skip


@pytest.mark.parametrize("chunk_size", [1, 2, 7, 64, 10_000])
def test_feature_path_is_chunk_independent(chunk_size):
    g = torch.Generator().manual_seed(7)
    num_images, dim = 11, 4
    text_to_image = shuffled_captions(num_images, g)
    # Small integer features: products are exact, so every chunking yields the same scores
    # and many ties.
    image_feats = torch.randint(-2, 3, (num_images, dim), generator=g).float()
    text_feats = torch.randint(-2, 3, (len(text_to_image), dim), generator=g).float()
    expected = reference_recall(image_feats @ text_feats.T, text_to_image.tolist())
    assert (
        retrieval_recall(image_feats, text_feats, text_to_image, chunk_size=chunk_size) == expected
    )


def _retrieval_data(seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    num_images, dim = 9, 5
    image_ids = (
        torch.randperm(10_000, generator=g)[:num_images] + 2**40
    )  # sparse, beyond float precision
    image_feats = torch.randint(-2, 3, (num_images, dim), generator=g).float()
    text_to_image = shuffled_captions(num_images, g)
    text_feats = torch.randint(-2, 3, (len(text_to_image), dim), generator=g).float()
    text_ids = torch.randperm(10_000, generator=g)[: len(text_to_image)] + 7
    return image_feats, image_ids, text_feats, text_to_image, text_ids


def test_metric_joins_by_id_and_drops_repeats():
    image_feats, image_ids, text_feats, text_to_image, text_ids = _retrieval_data()
    expected = retrieval_recall(image_feats, text_feats, text_to_image)
    metric = RetrievalRecall(chunk_size=3)
    # Captions before their images, images split and repeated, an empty image batch.
    metric.update(
        text_feats=text_feats[:30],
        text_image_ids=image_ids[text_to_image[:30]],
        text_ids=text_ids[:30],
    )
    metric.update(image_feats=image_feats[5:], image_ids=image_ids[5:])
    metric.update(
        image_feats=image_feats[:6],
        image_ids=image_ids[:6].tolist(),
        text_feats=text_feats[28:],
        text_image_ids=image_ids[text_to_image[28:]],
        text_ids=text_ids[28:],
    )
    metric.update(image_feats=torch.empty(0, 5), image_ids=[])
    got = metric.compute()
    assert {k: v.item() for k, v in got.items()} == expected
    assert got["tr_r1"].dtype == torch.float64


def test_metric_reports_chance_for_the_curves_when_asked():
    """Training-time evaluation logs chance beside the recalls (curves draws it as a line).
    With 6, 2 and 1 caption(s) per image a random ranking's TR@1 is n_i / N per image,
    1 / Ni on average, as IR@1's."""
    image_feats, image_ids, text_feats, _, text_ids = _retrieval_data()
    text_to_image = torch.tensor([0] * 6 + [1] * 2 + list(range(2, 9)))
    text_feats, text_ids = text_feats[: len(text_to_image)], text_ids[: len(text_to_image)]
    with_chance, plain = RetrievalRecall(with_chance=True), RetrievalRecall()
    for metric in (with_chance, plain):
        metric.update(image_feats, image_ids, text_feats, image_ids[text_to_image], text_ids)
    got = {k: v.item() for k, v in with_chance.compute().items()}
    assert got.pop("chance_tr_r1") == pytest.approx(1 / 9) and got.pop("chance_ir_r1") == pytest.approx(1 / 9)
    assert got == retrieval_recall(image_feats, text_feats, text_to_image)
    assert {k: v.item() for k, v in plain.compute().items()} == got


def test_metric_reset_clears_state():
    image_feats, image_ids, text_feats, text_to_image, text_ids = _retrieval_data()
    metric = RetrievalRecall()
    metric.update(image_feats[:2], image_ids[:2])
    metric.reset()
    metric.update(image_feats, image_ids, text_feats, image_ids[text_to_image], text_ids)
    assert (
        metric.compute()["r_mean"].item()
        == retrieval_recall(image_feats, text_feats, text_to_image)["r_mean"]
    )


def test_metric_errors_name_the_problem():
    image_feats, image_ids, text_feats, text_to_image, text_ids = _retrieval_data()
    metric = RetrievalRecall()
    metric.update(image_feats[1:], image_ids[1:], text_feats, image_ids[text_to_image], text_ids)
    with pytest.raises(ValueError, match="never reached"):
        metric.compute()

    metric = RetrievalRecall()
    metric.update(image_feats, image_ids, text_feats, image_ids[text_to_image], text_ids)
    metric.update(
        text_feats=text_feats[:1],
        text_image_ids=image_ids[(text_to_image[0] + 1) % 9][None],
        text_ids=text_ids[:1],
    )
    with pytest.raises(
        ValueError, match=rf"caption ids \[{text_ids[0].item()}\] arrived with different image ids"
    ):
        metric.compute()

    with pytest.raises(ValueError, match="needs text_image_ids"):
        RetrievalRecall().update(text_feats=text_feats, text_ids=text_ids)
    with pytest.raises(TypeError, match="image_ids must be integers"):
        RetrievalRecall().update(image_feats, image_ids.double())
    with pytest.raises(ValueError, match="feature dim 3 differs"):
        metric = RetrievalRecall()
        metric.update(image_feats, image_ids)
        metric.update(
            text_feats=text_feats[:, :3], text_image_ids=image_ids[text_to_image], text_ids=text_ids
        )


def test_function_errors():
    text_to_image = torch.tensor([0, 0, 2])
    with pytest.raises(ValueError, match=r"images have no caption \(first: \[1\]\)"):
        recall_from_scores(torch.zeros(3, 3), text_to_image)
    with pytest.raises(ValueError, match=r"captions \[2\] point to images \[5\]"):
        recall_from_scores(torch.zeros(3, 3), torch.tensor([0, 1, 5]))
    with pytest.raises(ValueError, match="NaN"):
        recall_from_scores(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match=r"expected image_feats \[Ni, D\]"):
        retrieval_recall(torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([0, 1]))
