"""Image-text retrieval recall: TR@K and IR@K as VLMo (and ALBEF, BLIP) report them.

TR@K (text retrieval, image queries): an image is a hit when ANY of its
captions ranks in its top K among all captions; averaged over images.
IR@K (image retrieval, caption queries): a caption is a hit when its image
ranks in its top K among all images; averaged over captions. ``r_mean`` is the
mean of the six recalls.

Ranking rule. A query's rank is the number of NEGATIVE candidates whose score
is greater than or equal to the query's best positive score; a hit at K means
rank < K. Without ties this is exactly the official ``topk`` computation
(microsoft/unilm ``vlmo/modules/objectives.py``). With ties ``topk``'s order
is implementation-defined, so we count ties against the query: results are
deterministic, independent of chunking and of candidate order, and a collapsed
model that gives every pair the same score gets no credit for it.

Similarities are streamed in blocks of ``chunk_size x gallery_chunk`` scores
(:func:`rank_queries`): per query only its rank and top ``k`` stay, so memory does
not grow with the gallery (10^6 captions need no ``Q x G`` matrix).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from vlmo_composer.metrics.common import IdKeyedMetric, as_id_tensor, first_index_per_id

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)
DEFAULT_CHUNK_SIZE = 512
DEFAULT_GALLERY_CHUNK = 65536
# Temporaries per score of a block, float32 features: the scores (4 B), a copy
# with the negatives masked out (pass 1, 4 B) or an int32 count (pass 2, 4 B),
# and bool masks of 1 B each (measured: 10-12 B).
BYTES_PER_BLOCK_ELEMENT = 16


def recall_keys(ks: Sequence[int] = DEFAULT_KS) -> list[str]:
    """Result keys in order: ``tr_r{k}`` for each k, ``ir_r{k}`` for each k, ``r_mean``."""
    return [f"tr_r{k}" for k in ks] + [f"ir_r{k}" for k in ks] + ["r_mean"]


def retrieval_recall(
    image_feats: Tensor,
    text_feats: Tensor,
    text_to_image: Tensor,
    ks: Sequence[int] = DEFAULT_KS,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    gallery_chunk: int = DEFAULT_GALLERY_CHUNK,
) -> dict[str, float]:
    """Recalls from embeddings; the score of a pair is ``image_feats @ text_feats.T``.

    Args:
        image_feats: ``[Ni, D]`` image embeddings (normalise them first for cosine).
        text_feats: ``[Nt, D]`` caption embeddings.
        text_to_image: ``[Nt]`` row index in ``image_feats`` of each caption's image.
        ks: the K of every recall.
        chunk_size: query rows scored at once.
        gallery_chunk: gallery rows scored at once (see :func:`rank_queries`).
    """
    if image_feats.ndim != 2 or text_feats.ndim != 2 or image_feats.shape[1] != text_feats.shape[1]:
        raise ValueError(
            f"expected image_feats [Ni, D] and text_feats [Nt, D], got {tuple(image_feats.shape)} "
            f"and {tuple(text_feats.shape)}"
        )
    text_to_image = _check_text_to_image(text_to_image, len(image_feats), len(text_feats))
    text_to_image = text_to_image.to(image_feats.device)
    image_index = torch.arange(len(image_feats), device=image_feats.device)
    tr = rank_queries(image_feats, text_feats, image_index, text_to_image, 0, chunk_size, gallery_chunk)
    ir = rank_queries(text_feats, image_feats, text_to_image, image_index, 0, chunk_size, gallery_chunk)
    return _recalls(tr.ranks, ir.ranks, ks)


def recall_from_scores(
    scores: Tensor,
    text_to_image: Tensor,
    ks: Sequence[int] = DEFAULT_KS,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[str, float]:
    """Recalls from a precomputed ``[Ni, Nt]`` score matrix (e.g. after ITM re-ranking).

    Same rule and same keys as :func:`retrieval_recall`.
    """
    if scores.ndim != 2:
        raise ValueError(f"expected scores [Ni, Nt], got shape {tuple(scores.shape)}")
    num_images, num_texts = scores.shape
    text_to_image = _check_text_to_image(text_to_image, num_images, num_texts).to(scores.device)
    image_index = torch.arange(num_images, device=scores.device)
    tr_ranks = _best_positive_ranks(
        lambda rows: scores[rows], image_index, text_to_image, chunk_size
    )
    ir_ranks = _best_positive_ranks(
        lambda rows: scores[:, rows].T, text_to_image, image_index, chunk_size
    )
    return _recalls(tr_ranks, ir_ranks, ks)


class Ranking(NamedTuple):
    """What :func:`rank_queries` keeps per query instead of a ``Q x G`` score matrix."""

    ranks: Tensor  # [Q] negatives scoring >= the query's best positive
    top_indices: Tensor  # [Q, min(k, G)] gallery rows, by score then lower index
    top_scores: Tensor  # [Q, min(k, G)] their scores


def rank_queries(
    query_feats: Tensor,
    gallery_feats: Tensor,
    query_labels: Tensor,
    gallery_labels: Tensor,
    k: int = 0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    gallery_chunk: int = DEFAULT_GALLERY_CHUNK,
) -> Ranking:
    """Rank of each query's best positive and its top ``k``, streaming the scores.

    A gallery row is a positive of a query when their labels are equal; the score
    of a pair is ``query_feats @ gallery_feats.T``. The ``Q x G`` scores are made in
    blocks of ``chunk_size x gallery_chunk`` and dropped after use, so a gallery of
    millions never needs its full matrix.

    Two passes per query chunk, because the best positive must be known before its
    negatives can be counted: the first scores only the gallery blocks holding a
    positive of the chunk, the second counts and keeps the top ``k``. Both passes
    compute a block by the same product, so a positive's score is bitwise the one
    its negatives are compared with (ties count against the query, as in
    :func:`recall_from_scores`). The last block of the first pass is kept for the
    second, so a gallery of one block is scored once. Top-k ties go to the lower
    gallery index, so the candidates are deterministic.

    Memory bound: at most ``BYTES_PER_BLOCK_ELEMENT * chunk_size * gallery_chunk``
    bytes of block temporaries (float32 features) plus ``12 * Q * k`` bytes of
    top-k and ``8 * Q`` of ranks, whatever ``G`` is.
    """
    _check_ranking_args(query_feats, gallery_feats, query_labels, gallery_labels, k, chunk_size, gallery_chunk)
    query_labels = query_labels.to(query_feats.device)
    gallery_labels = gallery_labels.to(query_feats.device)
    parts = [
        _rank_chunk(query_feats[rows], query_labels[rows], gallery_feats, gallery_labels, k, gallery_chunk)
        for rows in _slices(len(query_feats), chunk_size)
    ]
    return Ranking(*(torch.cat(column) for column in zip(*parts)))


def _check_ranking_args(query_feats, gallery_feats, query_labels, gallery_labels, k, chunk_size, gallery_chunk):
    if query_feats.ndim != 2 or gallery_feats.ndim != 2 or query_feats.shape[1] != gallery_feats.shape[1]:
        raise ValueError(
            f"expected query_feats [Q, D] and gallery_feats [G, D], got {tuple(query_feats.shape)} "
            f"and {tuple(gallery_feats.shape)}"
        )
    if query_labels.shape != (len(query_feats),) or gallery_labels.shape != (len(gallery_feats),):
        raise ValueError("expected one label per query and per gallery row")
    if chunk_size < 1 or gallery_chunk < 1 or k < 0:
        raise ValueError(f"need chunk_size, gallery_chunk >= 1 and k >= 0, got {chunk_size}, {gallery_chunk}, {k}")


def _slices(total: int, size: int) -> list[slice]:
    return [slice(start, start + size) for start in range(0, total, size)]


def _block_scores(queries: Tensor, gallery: Tensor) -> Tensor:
    scores = queries @ gallery.T
    if torch.isnan(scores).any():
        raise ValueError("retrieval scores contain NaN (check the embeddings)")
    return scores


def _rank_chunk(
    queries: Tensor, labels: Tensor, gallery: Tensor, gallery_labels: Tensor, k: int, gallery_chunk: int
) -> tuple[Tensor, Tensor, Tensor]:
    blocks = _slices(len(gallery), gallery_chunk)
    dtype = torch.promote_types(queries.dtype, gallery.dtype)
    best, kept = _best_positive(queries, labels, gallery, gallery_labels, blocks, dtype)
    if kept is not None:  # pass 2 starts with the block pass 1 kept: counts and top-k ignore block order
        blocks = [kept[0]] + [b for b in blocks if b != kept[0]]
    ranks = torch.zeros(len(queries), dtype=torch.long, device=queries.device)
    top_scores = torch.empty(len(queries), 0, dtype=dtype, device=queries.device)
    top_indices = torch.empty(len(queries), 0, dtype=torch.long, device=queries.device)
    for block in blocks:  # pass 2: negatives >= the best positive, and the running top k
        scores = kept[1] if kept is not None and block == kept[0] else _block_scores(queries, gallery[block])
        kept = None
        negative = labels[:, None] != gallery_labels[None, block]
        ranks += _count((scores >= best) & negative)
        del negative
        if k:
            values, indices = _block_top_k(scores, k)
            top_scores, top_indices = _best_k(
                torch.cat([top_scores, values], 1), torch.cat([top_indices, indices + block.start], 1), k
            )
        del scores
    return ranks, top_indices, top_scores


def _best_positive(
    queries: Tensor, labels: Tensor, gallery: Tensor, gallery_labels: Tensor, blocks: list[slice], dtype: torch.dtype
) -> tuple[Tensor, tuple[slice, Tensor] | None]:
    """Pass 1: each query's best positive score ``[R, 1]``, and the last block it scored.

    Only blocks holding a positive of these queries are scored; the previous block
    is released before the next is made, so one block of scores is alive at a time.
    """
    best = torch.full((len(queries), 1), float("-inf"), dtype=dtype, device=queries.device)
    kept = None
    for block in blocks:
        positive = labels[:, None] == gallery_labels[None, block]
        if positive.any():
            kept = None
            kept = (block, _block_scores(queries, gallery[block]))
            best = torch.maximum(best, kept[1].masked_fill(~positive, float("-inf")).amax(1, keepdim=True))
    return best, kept


def _block_top_k(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Each row's top ``k`` columns, ties at the k-th score going to the lower columns.

    ``topk`` picks among equal scores in no stated order; this takes every column
    above the k-th score and then the first columns equal to it (a loop over the
    rows with surplus ties, which needs no block-sized running count).
    """
    k = min(k, scores.shape[1])
    threshold = scores.topk(k, dim=1).values[:, -1:]
    above, at = scores > threshold, scores == threshold
    need = k - _count(above)
    take = above | at
    del above
    for row in (_count(at) > need).nonzero().flatten().tolist():  # surplus ties: rare but for a collapsed model
        take[row] &= ~at[row]
        take[row, at[row].nonzero().flatten()[: int(need[row])]] = True
    indices = take.nonzero()[:, 1].view(len(scores), k)  # ascending columns per row
    return scores.gather(1, indices), indices


def _count(mask: Tensor) -> Tensor:
    """True entries per row; int32, since a bool sum would first copy the mask to int64."""
    return mask.sum(1, dtype=torch.int32)


def _best_k(values: Tensor, indices: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` best of each row ordered by score, then by lower index (two stable sorts)."""
    by_index = indices.sort(dim=1, stable=True).indices
    values, indices = values.gather(1, by_index), indices.gather(1, by_index)
    order = values.sort(dim=1, descending=True, stable=True).indices[:, :k]
    return values.gather(1, order), indices.gather(1, order)


def chance_recall(text_to_image: Tensor, num_images: int) -> dict[str, float]:
    """Expected TR@1 / IR@1 of a random ranking: the line a small run's recall is judged against."""
    captions_per_image = torch.bincount(text_to_image, minlength=num_images).double()
    return {"chance_tr_r1": (captions_per_image / len(text_to_image)).mean().item(), "chance_ir_r1": 1.0 / num_images}


def recall_from_ranks(tr_ranks: Tensor, ir_ranks: Tensor, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """:func:`retrieval_recall`'s keys from the ranks of image queries and caption queries."""
    return _recalls(tr_ranks, ir_ranks, ks)


def _best_positive_ranks(
    score_rows: Callable[[slice], Tensor],
    query_labels: Tensor,
    candidate_labels: Tensor,
    chunk_size: int,
) -> Tensor:
    """Rank of each query's best positive (positive: the candidate's label is the query's)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    ranks = []
    for start in range(0, len(query_labels), chunk_size):
        rows = slice(start, start + chunk_size)
        scores = score_rows(rows)
        if torch.isnan(scores).any():
            raise ValueError("retrieval scores contain NaN (check the embeddings)")
        positive = query_labels[rows, None] == candidate_labels[None, :]
        best = scores.masked_fill(~positive, float("-inf")).amax(dim=1, keepdim=True)
        ranks.append(((scores >= best) & ~positive).sum(dim=1))
    return torch.cat(ranks)


def _recalls(tr_ranks: Tensor, ir_ranks: Tensor, ks: Sequence[int]) -> dict[str, float]:
    if not ks or any(int(k) < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {list(ks)}")
    result = {f"tr_r{k}": (tr_ranks < k).double().mean().item() for k in ks}
    result.update({f"ir_r{k}": (ir_ranks < k).double().mean().item() for k in ks})
    result["r_mean"] = sum(result.values()) / len(result)
    return result


def _check_text_to_image(text_to_image: Tensor, num_images: int, num_texts: int) -> Tensor:
    text_to_image = torch.as_tensor(text_to_image)
    if text_to_image.shape != (num_texts,) or text_to_image.is_floating_point():
        raise ValueError(
            f"text_to_image must be {num_texts} integer image indices, got {text_to_image.dtype} "
            f"of shape {tuple(text_to_image.shape)}"
        )
    if num_images == 0 or num_texts == 0:
        raise ValueError(f"retrieval needs images and captions, got {num_images} and {num_texts}")
    text_to_image = text_to_image.long()
    out_of_range = ((text_to_image < 0) | (text_to_image >= num_images)).nonzero().flatten()
    if len(out_of_range):
        raise ValueError(
            f"captions {out_of_range[:10].tolist()} point to images "
            f"{text_to_image[out_of_range[:10]].tolist()} outside [0, {num_images})"
        )
    captionless = (
        (torch.bincount(text_to_image.cpu(), minlength=num_images) == 0).nonzero().flatten()
    )
    if len(captionless):
        raise ValueError(
            f"{len(captionless)} images have no caption (first: {captionless[:10].tolist()}); "
            "TR@K is undefined for them"
        )
    return text_to_image


class RetrievalRecall(IdKeyedMetric):
    """TR@K / IR@K over a whole evaluation set, correct across ranks.

    Images and captions may arrive in separate ``update`` calls (either may be
    missing or empty), each identified by an integer id: a caption carries its
    own id and its image's id. ``compute`` drops repeated ids (sampler padding),
    links captions to images by id and returns :func:`retrieval_recall`'s keys
    as float64 tensors.
    """

    def __init__(
        self, ks: Sequence[int] = DEFAULT_KS, chunk_size: int = DEFAULT_CHUNK_SIZE, with_chance: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.ks = tuple(int(k) for k in ks)
        self.chunk_size = chunk_size
        self.with_chance = with_chance  # also return chance_tr_r1 / chance_ir_r1
        # Features are stored flattened so every state is 1-D (see IdKeyedMetric).
        for name, dtype in (
            ("image_feats", torch.float32),
            ("image_ids", torch.int64),
            ("text_feats", torch.float32),
            ("text_ids", torch.int64),
            ("text_image_ids", torch.int64),
        ):
            self.add_list_state(name, dtype)
        self._feat_dim: int | None = None  # checked per update: flattened states hide a mismatch

    def reset(self) -> None:
        super().reset()
        self._feat_dim = None

    def update(
        self,
        image_feats: Tensor | None = None,
        image_ids: Any = None,
        text_feats: Tensor | None = None,
        text_image_ids: Any = None,
        text_ids: Any = None,
    ) -> None:
        if image_feats is not None or image_ids is not None:
            feats, ids = _features_with_ids(image_feats, image_ids, "image")
            self._check_dim(feats)
            self.append("image_feats", feats)
            self.append("image_ids", ids)
        if text_feats is not None or text_image_ids is not None or text_ids is not None:
            feats, ids = _features_with_ids(text_feats, text_ids, "text")
            self._check_dim(feats)
            image_ids_of_text = as_id_tensor(
                _required(text_image_ids, "text_image_ids"), "text_image_ids"
            )
            if len(image_ids_of_text) != len(ids):
                raise ValueError(
                    f"got {len(ids)} text_ids but {len(image_ids_of_text)} text_image_ids"
                )
            self.append("text_feats", feats)
            self.append("text_ids", ids)
            self.append("text_image_ids", image_ids_of_text)

    def _check_dim(self, feats: Tensor) -> None:
        if len(feats) == 0:
            return
        if self._feat_dim is None:
            self._feat_dim = feats.shape[1]
        elif feats.shape[1] != self._feat_dim:
            raise ValueError(
                f"feature dim {feats.shape[1]} differs from the earlier {self._feat_dim}"
            )

    def compute(self) -> dict[str, Tensor]:
        image_feats, image_ids, _ = self._unique_rows("image_feats", "image_ids")
        text_feats, text_ids, text_keep = self._unique_rows("text_feats", "text_ids")
        all_text_ids, all_text_image_ids = (
            self.gathered("text_ids"),
            self.gathered("text_image_ids"),
        )
        text_image_ids = all_text_image_ids[text_keep]
        _, inverse = torch.unique(all_text_ids, return_inverse=True)
        conflicting = all_text_ids[text_image_ids[inverse] != all_text_image_ids]
        if len(conflicting):
            raise ValueError(
                f"caption ids {conflicting[:10].tolist()} arrived with different image ids"
            )
        text_to_image = torch.searchsorted(image_ids, text_image_ids).clamp(max=len(image_ids) - 1)
        orphans = text_ids[image_ids[text_to_image] != text_image_ids]
        if len(orphans):
            raise ValueError(
                f"{len(orphans)} captions (first ids: {orphans[:10].tolist()}) belong to "
                "images that never reached RetrievalRecall.update"
            )
        recalls = retrieval_recall(image_feats, text_feats, text_to_image, self.ks, self.chunk_size)
        if self.with_chance:  # logged beside the recalls, so a run's curves can draw the chance line
            recalls |= chance_recall(text_to_image, len(image_ids))
        return {key: torch.tensor(value, dtype=torch.float64) for key, value in recalls.items()}

    def _unique_rows(self, feats_name: str, ids_name: str) -> tuple[Tensor, Tensor, Tensor]:
        """Features ``[N, D]``, their ids and gathered positions: one row per id, sorted by id."""
        ids, flat = self.gathered(ids_name), self.gathered(feats_name)
        if len(ids) == 0:
            raise ValueError(f"RetrievalRecall received no {ids_name} before compute()")
        if flat.numel() % len(ids):
            raise ValueError(
                f"{feats_name} do not split into {len(ids)} equal rows (dims differ across ranks?)"
            )
        keep = first_index_per_id(ids)
        return flat.view(len(ids), -1)[keep], ids[keep], keep


def _required(value: Any, name: str) -> Any:
    if value is None:
        raise ValueError(
            f"RetrievalRecall.update needs {name} together with the features it describes"
        )
    return value


def _features_with_ids(feats: Tensor | None, ids: Any, kind: str) -> tuple[Tensor, Tensor]:
    feats = _required(feats, f"{kind}_feats")
    ids = as_id_tensor(_required(ids, f"{kind}_ids"), f"{kind}_ids")
    if feats.ndim != 2 or len(feats) != len(ids):
        raise ValueError(
            f"expected {kind}_feats [{len(ids)}, D] for {len(ids)} ids, got {tuple(feats.shape)}"
        )
    return feats, ids
