"""Run a function on N real processes (gloo) and collect what every rank returned."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, fn, args, out_dir: str) -> None:
    torch.set_num_threads(1)  # several ranks on a 2-core box: no OpenMP oversubscription
    # Composer's dist helpers check the launcher's variables against the process group; an
    # earlier test in this pytest process may have left single-process values behind.
    os.environ.update(
        WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), NODE_RANK="0"
    )
    dist.init_process_group(
        "gloo",
        init_method=f"file://{out_dir}/rendezvous",  # no port to pick, so no race with other jobs
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
    )
    result = fn(rank, world, *args)
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    # gloo's teardown can hang when the peer has already left; the results are on disk,
    # so leave without running it (exit code 0 tells the parent all went well).
    os._exit(0)


def run_distributed(fn, world: int = 2, args: tuple = (), timeout_s: float = 150.0) -> list:
    """``fn(rank, world, *args)`` on ``world`` processes; returns every rank's result in rank order.

    A rank that fails makes this raise with its traceback; workers are never left behind.
    """
    with tempfile.TemporaryDirectory() as out_dir:
        context = mp.spawn(_entry, args=(world, fn, args, out_dir), nprocs=world, join=False)
        deadline = time.monotonic() + timeout_s
        try:
            while not context.join(timeout=1):  # raises if a worker failed
                if time.monotonic() > deadline:
                    raise TimeoutError(f"distributed workers did not finish in {timeout_s} s")
        finally:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
                process.join()
        return [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=False) for r in range(world)]
