from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch
from transformers import DataCollatorForWholeWordMask

from vlmo_composer.data.masking import BlockwiseMaskGenerator, greedy_pick, whole_word_mask
from vlmo_composer.data.tokenizer import MASK_ID, encode_text, get_tokenizer

CAPTIONS = [
    "a man riding a bicycle down an unbelievably narrow street",
    "two dogs",
    "an extraordinarily photogenic hippopotamus wallowing in the mud near the riverbank at sunset",
]


def _repeat(enc: dict, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(enc[k].repeat(n, 1) for k in ("input_ids", "attention_mask", "word_start"))


def _words(word_start: torch.Tensor, real: torch.Tensor) -> list[list[int]]:
    groups: list[list[int]] = []
    for i, (start, keep) in enumerate(zip(word_start.tolist(), real.tolist())):
        if keep:
            if start or not groups:
                groups.append([i])
            else:
                groups[-1].append(i)
    return groups


def test_greedy_pick_skips_a_word_that_overshoots_and_keeps_trying():
    lengths = torch.tensor([[3, 2, 1, 1], [5, 1, 1, 1], [1, 1, 2, 1]])
    candidate = torch.ones_like(lengths, dtype=torch.bool)
    picked = greedy_pick(lengths, candidate, budget=4)
    assert picked.tolist() == [
        [True, False, True, False],  # 3 fits, 2 overshoots (skipped), 1 fits, budget spent
        [False, True, True, True],  # 5 never fits
        [True, True, True, False],  # 1 + 1 + 2 = 4
    ]
    assert not greedy_pick(lengths, torch.zeros_like(candidate), budget=4).any()


def test_never_masks_special_tokens_or_padding_and_keeps_words_whole():
    tok = get_tokenizer()
    enc = encode_text(CAPTIONS, 40)
    ids, mask, starts = _repeat(enc, 500)
    out, labels = whole_word_mask(
        ids, mask, starts, generator=torch.Generator().manual_seed(0), special_ids=tok.all_special_ids
    )
    masked = labels != -100
    assert masked.any()
    special = torch.isin(ids, torch.tensor(tok.all_special_ids))
    assert not (masked & special).any() and not (masked & (mask == 0)).any()
    assert torch.equal(out[~masked], ids[~masked])
    assert torch.equal(labels[masked], ids[masked])
    for row in range(3):
        non_special = (mask[row] == 1) & ~special[row]
        for word in _words(starts[row], non_special):
            if len(word) > 1:
                states = masked[row::3][:, word]
                assert (states.all(1) | ~states.any(1)).all(), word  # all sub-tokens or none


def test_full_sequences_mask_exactly_the_budget():
    enc = encode_text(" ".join(["word"] * 60), 40)  # 38 single-token words, no padding
    ids, mask, starts = _repeat(enc, 200)
    _, labels = whole_word_mask(ids, mask, starts, generator=torch.Generator().manual_seed(1))
    assert ((labels != -100).sum(1) == round(40 * 0.15)).all()

    enc = encode_text(" ".join(["word"] * 300), 196)
    ids, mask, starts = _repeat(enc, 20)
    _, labels = whole_word_mask(ids, mask, starts, generator=torch.Generator().manual_seed(1))
    assert ((labels != -100).sum(1) == 29).all()  # round(196 * 0.15)


def test_padded_captions_match_the_expected_rate_and_the_official_collator():
    tok = get_tokenizer()
    enc = encode_text(CAPTIONS, 40)
    n = 3000
    ids, mask, starts = _repeat(enc, n)
    _, labels = whole_word_mask(
        ids, mask, starts, generator=torch.Generator().manual_seed(2), special_ids=tok.all_special_ids
    )
    ours = (labels != -100).float().view(n, 3, 40).sum(-1).mean(0)

    # Single-token words only ("two dogs"): exactly 6 of the 38 candidate slots (2 words + 36
    # padding slots) are drawn, so the expected count is 6 * 2 / 38.
    assert abs(ours[1].item() - 6 * 2 / 38) < 0.03

    torch.manual_seed(0)
    random.seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        collator = DataCollatorForWholeWordMask(tok, mlm_probability=0.15)
        batch = collator([{"input_ids": row.tolist()} for row in ids])
    official = (batch["labels"] != -100).float().view(n, 3, 40).sum(-1).mean(0)
    for row in range(3):
        assert abs(ours[row] - official[row]) < 0.04 * max(official[row].item(), 1.0), (row, ours, official)


def test_80_10_10_replacement():
    enc = encode_text(" ".join(["word"] * 60), 40)
    ids, mask, starts = _repeat(enc, 5000)  # 30k masked tokens
    out, labels = whole_word_mask(ids, mask, starts, generator=torch.Generator().manual_seed(3))
    masked = labels != -100
    became_mask = (out[masked] == MASK_ID).float().mean().item()
    unchanged = (out[masked] == ids[masked]).float().mean().item()
    random_other = 1 - became_mask - unchanged
    assert abs(became_mask - 0.8) < 0.01
    assert abs(unchanged - 0.1) < 0.01
    assert abs(random_other - 0.1) < 0.01


def test_single_sequence_api_and_determinism():
    enc = encode_text(CAPTIONS[0], 40)
    args = (enc["input_ids"], enc["attention_mask"], enc["word_start"])
    a = whole_word_mask(*args, generator=torch.Generator().manual_seed(5))
    b = whole_word_mask(*args, generator=torch.Generator().manual_seed(5))
    assert a[0].shape == a[1].shape == (40,)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="invalid masking probabilities"):
        whole_word_mask(*args, mask_prob=1.5)


def test_blockwise_mask_reaches_the_target_like_beit():
    gen = BlockwiseMaskGenerator(14, 75)  # BEiT's setting: 75 of 196 patches, blocks of >= 16
    counts = np.array([int(gen(np.random.default_rng(seed)).sum()) for seed in range(300)])
    assert counts.max() == 75  # never more than the target
    # BEiT stops when ten tries cannot place a block that adds at most the remaining count, so it
    # sometimes ends a few patches short; with small blocks allowed it (almost) always hits it.
    assert (counts == 75).mean() > 0.55 and counts.mean() > 73.5
    small = BlockwiseMaskGenerator(14, 75, min_num_patches=1)
    assert all(int(small(np.random.default_rng(seed)).sum()) == 75 for seed in range(100))

    mask = gen(np.random.default_rng(7))
    assert mask.dtype == torch.bool and mask.shape == (196,)
    assert torch.equal(mask, gen(np.random.default_rng(7)))


def test_blocks_are_rectangles_and_masks_are_clustered():
    gen = BlockwiseMaskGenerator(14, 75)
    for seed in range(50):
        grid = np.zeros((14, 14), dtype=bool)
        added = gen.add_block(grid, 75, np.random.default_rng(seed))
        rows, cols = np.nonzero(grid)
        assert added == grid.sum() > 0
        box = grid[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all()  # exactly its bounding box: one solid rectangle

    # Masked patches have far more masked 4-neighbours than in a random mask of the same size.
    def masked_neighbour_rate(grid: np.ndarray) -> float:
        padded = np.pad(grid, 1)
        neighbours = (
            padded[:-2, 1:-1] & grid,
            padded[2:, 1:-1] & grid,
            padded[1:-1, :-2] & grid,
            padded[1:-1, 2:] & grid,
        )
        return sum(n.sum() for n in neighbours) / (4 * grid.sum())

    block_rate = np.mean(
        [masked_neighbour_rate(gen(np.random.default_rng(s)).numpy().reshape(14, 14)) for s in range(50)]
    )
    assert block_rate > 0.6  # a random 75/196 mask gives about 0.35
