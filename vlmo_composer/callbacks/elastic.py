"""Elastic resumption: what may change between restarts, what may not, and the RNG list.

A run may resume on another number of nodes or GPUs per node (the world size)
and still see the global sample order of an uninterrupted run at the new size:
Streaming partitions each global batch over ``num_canonical_nodes`` canonical
nodes, not over the physical ranks, and every per-sample draw of the datasets
is keyed by (seed, epoch, sample index). That holds only while the global
batch, the canonical node count, the seed and the shuffle seed stay as they
were, so :class:`RunShape` records them in every checkpoint (a Callback's
``state_dict`` is saved with it) and :func:`check_resume` refuses a resume that
changed one, in one line naming the key and both values.

Composer saves one RNG state per rank and, at another world size, restores
entry ``r`` on rank ``r`` when it exists and leaves the others unrestored (with
a warning). :func:`fit_rng_states` makes that rule explicit: rank ``r`` takes
entry ``r``; a rank the checkpoint has no entry for gets a state seeded from
``(seed, rank, batch)``; entries beyond the new world size are dropped.

:class:`KeyedDrawStep` gives a task the (seed, global step) of the step in
progress, so its per-sample draws (ITM hard negatives, drop path, text dropout) are keyed
by seed, step and sample id rather than by a rank's generator: the same on any number of
ranks (``common/keyed_draws.py``).
"""

from __future__ import annotations

import random
from typing import Any, Optional

import numpy as np
import torch
from composer.core import Callback, State
from composer.loggers import Logger
from torch.nn.parallel import DistributedDataParallel

from vlmo_composer import stores
from vlmo_composer.common.errors import ConfigError

# Streaming 0.13's defaults when a loader leaves these out.
STREAMING_SHUFFLE_SEED = 9176
STREAMING_SHUFFLE_ALGO = "py1e"

# Keys that must not change between restarts (the names users write in the YAML).
MUST_KEEP = (
    "global_train_batch_size",
    "train_loader.dataset.num_canonical_nodes",
    "seed",
    "train_loader.dataset.shuffle_seed",
    "train_loader.dataset.seed",
)


def canonical_nodes(dataset: dict, num_nodes: int) -> int:
    """The ``num_canonical_nodes`` Streaming will use: the loader's, else its default for
    ``num_nodes`` physical nodes (which is why an elastic run must set it)."""
    if dataset.get("num_canonical_nodes"):
        return int(dataset["num_canonical_nodes"])
    algo = dataset.get("shuffle_algo") or STREAMING_SHUFFLE_ALGO
    return 64 * num_nodes if algo in ("py1s", "py2s") else num_nodes


def run_shape(cfg: Any, world_size: int, num_nodes: int) -> dict[str, Any]:
    """What a checkpoint records about the run that saved it (``cfg``: a TrainConfig)."""
    dataset = cfg.train_loader.dataset
    shuffle_seed = dataset.get("shuffle_seed")
    shuffle_seed = STREAMING_SHUFFLE_SEED if shuffle_seed is None else int(shuffle_seed)
    data_seed = dataset.get("seed")
    return {
        "world_size": world_size,
        "num_nodes": num_nodes,
        "global_train_batch_size": int(cfg.global_train_batch_size),
        "train_loader.dataset.num_canonical_nodes": canonical_nodes(dataset, num_nodes),
        "seed": cfg.seed,
        "train_loader.dataset.shuffle_seed": shuffle_seed,
        "train_loader.dataset.seed": shuffle_seed if data_seed is None else int(data_seed),
    }


def ranks(n: int) -> str:
    return f"{n} rank{'' if n == 1 else 's'}"


def check_resume(saved: dict[str, Any], current: dict[str, Any]) -> Optional[str]:
    """None, or the line to print when the world size changed; raises ConfigError when a
    value that must not change did. Keys a checkpoint did not record are not checked."""
    for key in MUST_KEEP:
        if key in saved and saved[key] != current[key]:
            hint = ""
            if key == "train_loader.dataset.num_canonical_nodes":
                hint = f"; set {key}: {saved[key]} (unset, Streaming takes the node count)"
            raise ConfigError(f"cannot resume: {key} is {current[key]} but the checkpoint was saved with "
                              f"{saved[key]}; it must not change between restarts{hint}")
    before, now = saved.get("world_size"), current["world_size"]
    if before is None or before == now:
        return None
    return f"resumed at {ranks(now)} from a run saved at {before}: sample order kept"


class RunShape(Callback):
    """Saves :func:`run_shape` in every checkpoint; after a resume, ``saved`` holds the
    checkpoint's record (None when nothing was resumed or the checkpoint predates it)."""

    def __init__(self, current: dict[str, Any]) -> None:
        self.current = dict(current)
        self.saved: Optional[dict[str, Any]] = None
        self.elastic_line: Optional[str] = None  # set by the trainer builder from check_resume

    def state_dict(self) -> dict[str, Any]:
        return dict(self.current)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.saved = dict(state)


class KeyedDrawStep(Callback):
    """Sets ``draw_key``, the key of (seed, global step), on a task that has one, before each batch."""

    def batch_start(self, state: State, logger: Logger) -> None:
        from vlmo_composer.common.keyed_draws import step_key

        model = state.model.module if isinstance(state.model, DistributedDataParallel) else state.model
        if hasattr(model, "draw_key"):
            device = next(model.parameters()).device
            model.draw_key = step_key(int(state.rank_zero_seed), int(state.timestamp.batch), device)


def seeded_rng_state(seed: int) -> dict[str, Any]:
    """An RNG state dict in Composer's format (torch, python, numpy) seeded with ``seed``."""
    return {
        "torch": torch.Generator().manual_seed(seed).get_state(),
        "python": random.Random(seed).getstate(),
        "numpy": np.random.RandomState(seed % 2**32).get_state(),
    }


def fit_rng_states(states: list[dict], world_size: int, seed: int, batch: int) -> list[dict]:
    """The checkpoint's per-rank RNG states fitted to ``world_size`` ranks (see the module doc)."""
    fitted = list(states[:world_size])
    for rank in range(len(fitted), world_size):
        entropy = np.random.SeedSequence([int(seed), rank, int(batch)]).generate_state(1)[0]
        fitted.append(seeded_rng_state(int(entropy)))
    return fitted


def saved_record(path: str) -> tuple[Optional[dict[str, Any]], Optional[int]]:
    """``(RunShape record, batch)`` of a local Composer checkpoint, read memory-mapped (no tensor
    is copied); the record is None for a checkpoint saved before runs recorded it."""
    state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)["state"]
    stamp = state.get("timestamp") or {}
    batch = stamp.get("Timestamp", stamp).get("batch")
    return (state.get("callbacks") or {}).get(RunShape.__qualname__), None if batch is None else int(batch)


def describe_resume(path: str, current: dict[str, Any]) -> str:
    """The dry run's line for a checkpoint a run would resume from; raises ConfigError as the
    run would (:func:`check_resume`)."""
    if stores.has_scheme(path):
        return f"resume: from {path} (remote: its world size is checked when the run starts)"
    record, batch = saved_record(path)
    at = f" at batch {batch}" if batch is not None else ""
    if record is None:
        return f"resume: from {path}{at} (saved before runs recorded their world size: not checked)"
    line = check_resume(record, current) or f"same world size ({ranks(current['world_size'])})"
    return f"resume: from {path}{at}, {line}"
