"""Cross-rank gathers for the global-batch objectives (one place, tested on its own)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


_sizes_checked = False


def _check_equal_sizes(tensor: torch.Tensor, world: int) -> None:
    """All ranks' batch sizes agree: checked on the first call only (it syncs with the host).

    Later batches have the same size by construction (the train loader drops the
    last partial batch, Composer gives every rank the same device batch); under
    ``torch.compile`` the check is left out of the graph.
    """
    global _sizes_checked
    if _sizes_checked or torch.compiler.is_compiling():
        return
    _sizes_checked = True
    sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([tensor.shape[0]], device=tensor.device))
    if len({int(s) for s in sizes}) != 1:
        raise ValueError(
            f"global-batch objectives need the same batch size on every rank, got {[int(s) for s in sizes]}; "
            "use drop_last=True in the train dataloader"
        )


def gather_with_grad(tensor: torch.Tensor, check_sizes: bool = False) -> torch.Tensor:
    """Concatenate ``tensor`` from all ranks in rank order, letting gradients flow back.

    The backward pass sums the gradients of every rank's copy into its owner, so a
    loss computed from the gathered tensor on each rank, averaged by DDP, has the
    gradient of the global-batch loss whatever the number of ranks.
    """
    rank, world = rank_and_world()
    if world == 1:
        return tensor
    if check_sizes:
        _check_equal_sizes(tensor, world)
    return torch.cat(dist_fn.all_gather(tensor), dim=0)


@torch.no_grad()
def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from all ranks in rank order (no autograd)."""
    rank, world = rank_and_world()
    if world == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def sum_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over all ranks (no autograd)."""
    rank, world = rank_and_world()
    if world == 1:
        return tensor
    total = tensor.clone()
    dist.all_reduce(total)
    return total
