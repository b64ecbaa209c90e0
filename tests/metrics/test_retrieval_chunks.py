"""Streamed ranking (issue 19): the ranks and top-k of the full score matrix, in bounded memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vlmo_composer.metrics import rank_queries, recall_from_ranks, recall_from_scores
from vlmo_composer.metrics.retrieval import BYTES_PER_BLOCK_ELEMENT

REPO = Path(__file__).resolve().parents[2]


def full_matrix_ranks(scores: torch.Tensor, query_labels: torch.Tensor, gallery_labels: torch.Tensor) -> torch.Tensor:
    """The rule on the whole matrix: negatives scoring >= the best positive."""
    positive = query_labels[:, None] == gallery_labels[None, :]
    best = scores.masked_fill(~positive, float("-inf")).amax(1, keepdim=True)
    return ((scores >= best) & ~positive).sum(1)


def full_matrix_top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top k by score, ties to the lower index: a stable descending sort of each whole row."""
    order = scores.sort(dim=1, descending=True, stable=True).indices[:, :k]
    return scores.gather(1, order), order


def tied_data(seed: int, num_images: int = 11, captions: int = 5, dim: int = 4):
    """Small integer features (exact products, so any blocking gives the same scores; many ties),
    several captions per image in shuffled order."""
    g = torch.Generator().manual_seed(seed)
    text_to_image = torch.arange(num_images).repeat_interleave(captions)
    text_to_image = text_to_image[torch.randperm(len(text_to_image), generator=g)]
    image_feats = torch.randint(-2, 3, (num_images, dim), generator=g).float()
    text_feats = torch.randint(-2, 3, (len(text_to_image), dim), generator=g).float()
    return image_feats, text_feats, text_to_image


@pytest.mark.parametrize("chunk_size,gallery_chunk", [(1, 1), (3, 4), (7, 13), (4, 10_000), (10_000, 7), (10_000, 10_000)])
@pytest.mark.parametrize("seed", range(2))
def test_ranks_and_top_k_equal_the_full_matrix_with_ties(seed, chunk_size, gallery_chunk):
    image_feats, text_feats, text_to_image = tied_data(seed)
    images = torch.arange(len(image_feats))
    scores = image_feats @ text_feats.T
    for queries, gallery, q_labels, g_labels, full in (
        (image_feats, text_feats, images, text_to_image, scores),  # TR: images query captions
        (text_feats, image_feats, text_to_image, images, scores.T),  # IR: captions query images
    ):
        for k in (1, 5, len(gallery) + 3):
            got = rank_queries(queries, gallery, q_labels, g_labels, k, chunk_size, gallery_chunk)
            assert torch.equal(got.ranks, full_matrix_ranks(full, q_labels, g_labels))
            values, indices = full_matrix_top_k(full, k)
            assert torch.equal(got.top_indices, indices) and torch.equal(got.top_scores, values)


@pytest.mark.parametrize("chunk_size,gallery_chunk", [(1, 1), (5, 9), (512, 65536)])
def test_recalls_equal_todays_full_matrix_recalls(chunk_size, gallery_chunk):
    image_feats, text_feats, text_to_image = tied_data(3, num_images=17)
    images = torch.arange(len(image_feats))
    tr = rank_queries(image_feats, text_feats, images, text_to_image, 0, chunk_size, gallery_chunk)
    ir = rank_queries(text_feats, image_feats, text_to_image, images, 0, chunk_size, gallery_chunk)
    assert recall_from_ranks(tr.ranks, ir.ranks) == recall_from_scores(image_feats @ text_feats.T, text_to_image)


def test_random_float_features_match_the_full_matrix():
    g = torch.Generator().manual_seed(5)
    queries = torch.nn.functional.normalize(torch.randn(37, 16, generator=g), dim=1)
    gallery = torch.nn.functional.normalize(torch.randn(203, 16, generator=g), dim=1)
    q_labels, g_labels = torch.arange(37), torch.randint(0, 37, (203,), generator=g)
    got = rank_queries(queries, gallery, q_labels, g_labels, k=16, chunk_size=6, gallery_chunk=50)
    full = queries @ gallery.T
    assert torch.equal(got.ranks, full_matrix_ranks(full, q_labels, g_labels))
    assert torch.equal(got.top_indices, full.topk(16, dim=1).indices)  # no ties: topk's order
    assert torch.allclose(got.top_scores, full.topk(16, dim=1).values)


def test_a_collapsed_model_counts_ties_against_every_query():
    got = rank_queries(torch.ones(3, 2), torch.ones(15, 2), torch.arange(3), torch.arange(3).repeat_interleave(5),
                       k=4, chunk_size=2, gallery_chunk=4)
    assert got.ranks.tolist() == [10, 10, 10]
    assert got.top_indices.tolist() == [[0, 1, 2, 3]] * 3


def test_nan_scores_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        rank_queries(torch.full((2, 3), float("nan")), torch.ones(4, 3), torch.arange(2), torch.arange(4))


MEMORY_PROBE = """
import resource, sys, torch
from vlmo_composer.metrics import rank_queries
q, g, chunk, gallery_chunk, k = 64, 2_000_000, 64, 32_768, 16
torch.manual_seed(0)
queries, gallery = torch.randn(q, 4), torch.randn(g, 4)
g_labels = torch.full((g,), -1, dtype=torch.long)
g_labels[:q] = torch.arange(q)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ranking = rank_queries(queries, gallery, torch.arange(q), g_labels, k, chunk, gallery_chunk)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert ranking.top_indices.shape == (q, k)
print((after - before) * 1024, chunk * gallery_chunk, q * g * 4)
"""


def test_peak_memory_does_not_grow_with_the_gallery():
    """64 queries x 2,000,000 gallery rows: a full float32 matrix is 512 MB; the stated bound
    for 64 x 32,768 blocks is 32 MiB. Measured as the growth of the peak RSS of a fresh process;
    a fixed mmap threshold makes glibc hand every freed block back, so RSS follows live memory
    instead of what the allocator caches."""
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE], cwd=REPO, capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    grown, block_elements, full_matrix_bytes = map(int, out.stdout.split())
    bound = BYTES_PER_BLOCK_ELEMENT * block_elements + 12 * 64 * 16
    slack = 16 * 2**20  # allocator and thread overheads
    assert grown <= bound + slack, (grown, bound)
    assert bound + slack < full_matrix_bytes / 4  # the check would catch a full matrix
