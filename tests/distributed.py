"""Run a function on N real processes (gloo on 127.0.0.1) and collect rank 0's result."""

from __future__ import annotations

import os
import socket
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, fn, args, out_path: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)  # two ranks on a 2-core box: no OpenMP oversubscription
    dist.init_process_group("gloo", rank=rank, world_size=world)
    result = fn(rank, world, *args)
    if rank == 0:
        torch.save(result, out_path)
    dist.barrier()  # tearing down while the other rank is still inside the group can hang
    dist.destroy_process_group()


def run_distributed(fn, world: int = 2, args: tuple = ()):
    """``fn(rank, world, *args)`` on ``world`` processes; returns what rank 0 returned."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.pt")
        mp.spawn(_entry, args=(world, free_port(), fn, args, out), nprocs=world, join=True)
        return torch.load(out, weights_only=False)
