"""Counter-based random draws keyed by (seed, step, global sample id): the same on any number of ranks.

A generator's draws depend on how many rows each rank holds, so a run's trajectory would
depend on its world size. Here a draw is a hash (SplitMix64's finaliser, int64 tensors,
wrapping arithmetic) of the step's key (:func:`step_key`), the row's global sample id and
what is drawn, so a row draws the same number whichever rank holds it, after a resume at
another world size too. Everything is a tensor op on the device: no host sync, and a
compiled step neither guards on the step number nor recompiles when it changes.

Users: ITM hard negatives (``objectives/itm.py``, :func:`keyed_uniforms`), and the model's
drop path and text-embedding dropout (:func:`row_keys` per pass, :func:`mix` per layer,
:func:`unit_uniforms` / :func:`element_uniforms` for the masks).
"""

from __future__ import annotations

import torch

_MASK64 = (1 << 64) - 1


def _signed(value: int) -> int:
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN, _MIX1, _MIX2 = (_signed(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))
# Separates the model's draws (drop path, dropout) from the ITM draws of the same step and rows.
MODEL_DRAWS = _signed(0x6D6F64656C647270)


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's ``>>`` keeps the sign)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser on int64 tensors (wrapping arithmetic): a counter-based hash."""
    x = x + _GOLDEN
    x = (x ^ _shift_right(x, 30)) * _MIX1
    x = (x ^ _shift_right(x, 27)) * _MIX2
    return x ^ _shift_right(x, 31)


def mix(key: torch.Tensor, value: torch.Tensor | int) -> torch.Tensor:
    """A new key from ``key`` and ``value`` (broadcast): ``splitmix64(key ^ value)``."""
    return splitmix64(key ^ (value.long() if isinstance(value, torch.Tensor) else _signed(value)))


def step_key(seed: int, step: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The [1] int64 key of (seed, step): a tensor, so a compiled step neither guards on
    the step number nor recompiles when it changes."""
    key = splitmix64(torch.tensor([_signed(seed)], dtype=torch.int64))
    return splitmix64(key ^ _signed(step)).to(device)


def keyed_uniforms(key: torch.Tensor, ids: torch.Tensor, side: int) -> torch.Tensor:
    """One float64 in [0, 1) per id, a function of (the step's ``key``, id, side) only."""
    return _shift_right(mix(mix(key, ids), side), 11).double() * 2.0**-53


def row_keys(key: torch.Tensor, ids: torch.Tensor, stream: int) -> torch.Tensor:
    """[B] keys of the model's draws for rows with global sample ids ``ids`` in one pass of a
    step (``stream`` names the pass: the image pass, the text pass, a fused batch's part)."""
    return mix(mix(mix(key, MODEL_DRAWS), ids), stream)


def unit_uniforms(keys: torch.Tensor) -> torch.Tensor:
    """One float32 in [0, 1) per key (its top 24 bits, after one more hash)."""
    return _shift_right(splitmix64(keys), 40).float() * 2.0**-24


def element_uniforms(keys: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``[B, *shape]`` float32 in [0, 1): element ``c`` (row-major counter) of row ``b`` is the
    ``c``-th output of SplitMix64's stream seeded with ``keys[b]``, so an element's number does
    not depend on the batch size or on the other rows."""
    count = 1
    for size in shape:
        count *= size
    counters = torch.arange(count, device=keys.device, dtype=torch.int64).view(shape) * _GOLDEN
    state = keys.view(-1, *(1,) * len(shape)) + counters
    return _shift_right(splitmix64(state), 40).float() * 2.0**-24
