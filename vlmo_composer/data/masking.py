"""Masking for the pre-training objectives: whole-word MLM masks and BEiT blockwise image masks.

Whole-word masking follows what the official VLMo code gets from transformers'
``DataCollatorForWholeWordMask`` applied to captions padded to ``max_length``:

* the budget is ``max(1, round(mask_prob * T))`` tokens, ``T`` the PADDED
  length (6 at T=40, 29 at T=196);
* the candidates are the words (a word is a token plus its ``##``
  continuations; [CLS]/[SEP] excluded) and every padding slot, visited in
  random order; padding slots use up budget but are never masked. So a short
  caption gets about ``budget / (T - 2)`` of its tokens masked (15.8% at
  T=40) and a sequence without padding exactly the budget;
* each selected token independently becomes [MASK] (80%), a random id from
  the whole vocabulary (10%) or stays (10%), as the collator does it: per
  token, not per word.

Given the same visiting order the selection is exactly the collator's (a
word that would overshoot the budget is skipped and later ones still tried);
it is computed on whole batches, with one vectorised pass per skipped word
instead of a loop over tokens.

The blockwise image mask is BEiT's: rectangles of random area and aspect
ratio are added until ``num_masking_patches`` patches are masked; a block is
kept only if it adds at least one and at most the remaining number of patches,
so the target is reached exactly unless ten consecutive tries fail.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vlmo_composer.data.tokenizer import CLS_ID, MASK_ID, PAD_ID, SEP_ID, VOCAB_SIZE
from vlmo_composer.objectives.mlm import IGNORE_INDEX, mlm_budget


def _unit_structure(maskable: Tensor, pad_slot: Tensor, word_start: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Candidate units (words and padding slots) of each row.

    Returns ``unit_of`` (``[B, T]`` unit id of every position), ``unit_len``
    (``[B, T]`` length of unit ``u`` at column ``u``) and ``unit_exists``.
    """
    batch, length = maskable.shape
    prev_maskable = F.pad(maskable[:, :-1], (1, 0), value=False)
    unit_start = (maskable & (word_start | ~prev_maskable)) | pad_slot
    unit_of = (unit_start.long().cumsum(-1) - 1).clamp(min=0)
    unit_len = torch.zeros(batch, length, dtype=torch.long).scatter_add_(
        1, unit_of, (maskable | pad_slot).long()
    )
    unit_exists = torch.arange(length) < unit_start.sum(-1, keepdim=True)
    return unit_of, unit_len, unit_exists


def greedy_pick(lengths: Tensor, candidate: Tensor, budget: int) -> Tensor:
    """The collator's rule on units already in visiting order (``[B, U]``).

    A unit is taken if it still fits in the budget, else skipped for good.
    Each pass takes the longest run that fits and drops the unit that
    overshoots, so the loop runs once per skip, not once per token.
    """
    remaining = torch.full((lengths.shape[0], 1), budget, dtype=torch.long)
    picked = torch.zeros_like(candidate)
    active = candidate.clone()
    while True:
        active &= lengths <= remaining  # longer than what is left: can never fit
        if not active.any():
            return picked
        running = (lengths * active).cumsum(-1)
        fits = active & (running <= remaining)
        overshoot = active & ~fits
        first_overshoot = overshoot & (overshoot.long().cumsum(-1) == 1)
        picked |= fits
        remaining -= (lengths * fits).sum(-1, keepdim=True)
        active &= ~fits & ~first_overshoot


def _select_whole_words(
    maskable: Tensor, pad_slot: Tensor, word_start: Tensor, budget: int, generator: torch.Generator | None
) -> Tensor:
    """``[B, T]`` bool: the maskable positions of the words picked within ``budget`` tokens."""
    unit_of, unit_len, unit_exists = _unit_structure(maskable, pad_slot, word_start)
    keys = torch.rand(unit_len.shape, generator=generator).masked_fill(~unit_exists, 2.0)
    order = keys.argsort(dim=-1)  # a random permutation of each row's units, absent ids last
    picked_sorted = greedy_pick(unit_len.gather(1, order), unit_exists.gather(1, order), budget)
    picked_unit = torch.zeros_like(picked_sorted).scatter_(1, order, picked_sorted)
    return maskable & picked_unit.gather(1, unit_of)


def whole_word_mask(
    input_ids: Tensor,
    attention_mask: Tensor,
    word_start: Tensor,
    mask_prob: float = 0.15,
    generator: torch.Generator | None = None,
    mask_token_id: int = MASK_ID,
    vocab_size: int = VOCAB_SIZE,
    special_ids: Sequence[int] = (PAD_ID, CLS_ID, SEP_ID),
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
) -> tuple[Tensor, Tensor]:
    """Whole-word MLM masking of ``[T]`` or ``[B, T]`` token ids (semantics in the module doc).

    Returns ``(masked_input_ids, labels)``: labels hold the original id at
    masked positions and -100 elsewhere. Special ids and padding are never
    masked.
    """
    if not 0 <= mask_prob <= 1 or mask_replace_prob + random_replace_prob > 1:
        raise ValueError(
            f"invalid masking probabilities: mask_prob={mask_prob}, "
            f"mask_replace_prob={mask_replace_prob}, random_replace_prob={random_replace_prob}"
        )
    single = input_ids.ndim == 1
    ids = input_ids.unsqueeze(0) if single else input_ids
    real = (attention_mask.unsqueeze(0) if single else attention_mask).bool()
    starts = (word_start.unsqueeze(0) if single else word_start).bool()

    maskable = real & ~torch.isin(ids, torch.as_tensor(list(special_ids), dtype=ids.dtype))
    budget = mlm_budget(ids.shape[-1], mask_prob)
    masked = _select_whole_words(maskable, ~real, starts, budget, generator)

    labels = ids.masked_fill(~masked, IGNORE_INDEX)
    draw = torch.rand(ids.shape, generator=generator)
    to_mask = masked & (draw < mask_replace_prob)
    to_random = masked & (draw >= mask_replace_prob) & (draw < mask_replace_prob + random_replace_prob)
    random_ids = torch.randint(vocab_size, ids.shape, generator=generator, dtype=ids.dtype)
    out = ids.masked_fill(to_mask, mask_token_id)
    out = torch.where(to_random, random_ids, out)
    if single:
        return out[0], labels[0]
    return out, labels


class BlockwiseMaskGenerator:
    """BEiT's blockwise masking over a ``window x window`` patch grid.

    BEiT pre-training uses 75 of 196 patches (about 40%) at 224 / patch 16,
    ``min_num_patches=16``, aspect ratios in ``[0.3, 1/0.3]``.
    """

    def __init__(
        self,
        window: int,
        num_masking_patches: int,
        min_num_patches: int = 16,
        max_num_patches: int | None = None,
        min_aspect: float = 0.3,
        max_aspect: float | None = None,
    ) -> None:
        if not 0 < num_masking_patches <= window * window:
            raise ValueError(
                f"num_masking_patches must be in [1, {window * window}], got {num_masking_patches}"
            )
        self.window = window
        self.num_masking_patches = num_masking_patches
        self.min_num_patches = min_num_patches
        self.max_num_patches = num_masking_patches if max_num_patches is None else max_num_patches
        max_aspect = max_aspect if max_aspect is not None else 1 / min_aspect
        self.log_aspect = (math.log(min_aspect), math.log(max_aspect))

    @property
    def num_patches(self) -> int:
        return self.window * self.window

    def add_block(self, mask: np.ndarray, max_new: int, rng: np.random.Generator) -> int:
        """Try (up to ten times) to mask one rectangle adding 1..``max_new`` patches; return how many."""
        for _ in range(10):
            low, high = sorted((self.min_num_patches, max_new))  # like random.uniform, either order
            area = rng.uniform(low, high)
            aspect = math.exp(rng.uniform(*self.log_aspect))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if not (w < self.window and h < self.window):
                continue
            top = int(rng.integers(0, self.window - h + 1))
            left = int(rng.integers(0, self.window - w + 1))
            block = mask[top : top + h, left : left + w]
            new = h * w - int(block.sum())
            if 0 < new <= max_new:
                block[...] = True
                return new
        return 0

    def __call__(self, rng: np.random.Generator) -> Tensor:
        """``[window * window]`` bool mask, row-major over the patch grid."""
        mask = np.zeros((self.window, self.window), dtype=bool)
        count = 0
        while count < self.num_masking_patches:
            max_new = min(self.num_masking_patches - count, self.max_num_patches)
            added = self.add_block(mask, max_new, rng)
            if added == 0:
                break
            count += added
        return torch.from_numpy(mask.reshape(-1))
