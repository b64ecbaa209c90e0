"""Evaluation on every rank the launcher started (``composer -n N eval.py ...``).

Each rank reads its share of a split (Streaming shards it, padding uneven shares by
repeating samples); what the ranks computed is gathered and every sample counted
once, by its id, so the numbers are those of one process.
"""

from __future__ import annotations

import torch
from composer.utils import dist


def join_ranks(device: torch.device) -> torch.device:
    """Join the launcher's process group (once); a GPU run takes this rank's local GPU."""
    if device.type == "cuda":
        device = torch.device("cuda", dist.get_local_rank())
        torch.cuda.set_device(device)
    if dist.get_world_size() > 1 and not dist.is_initialized():
        dist.initialize_dist("gpu" if device.type == "cuda" else "cpu")
    return device


def gather_by_id(ids: torch.Tensor, *rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every rank's ``(ids, *rows)`` (CPU), one row per distinct id, sorted by id.

    Collective when distributed. Sorting by id gives one process's order (it reads
    a split in order), and a sample the sampler repeated is kept once.
    """
    parts = [ids.cpu(), *(r.cpu() for r in rows)]
    if dist.get_world_size() > 1:
        per_rank = dist.all_gather_object(parts)
        parts = [torch.cat([rank[i] for rank in per_rank]) for i in range(len(parts))]
    unique, first = unique_first(parts[0])
    return (unique, *(part[first] for part in parts[1:]))


def unique_first(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted unique ids and the first position of each (samplers may repeat samples)."""
    unique, inverse = torch.unique(ids, sorted=True, return_inverse=True)
    positions = torch.arange(len(ids))
    first = torch.full((len(unique),), len(ids), dtype=torch.long).scatter_reduce(0, inverse, positions, "amin")
    return unique, first


def distinct_count(ids: torch.Tensor) -> int:
    """How many distinct ids all ranks saw together (collective when distributed)."""
    return len(gather_by_id(ids)[0])
