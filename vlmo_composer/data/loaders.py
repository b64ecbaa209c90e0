"""Dataloaders from YAML: a registered dataset name, its arguments, Streaming's arguments.

``dataset:`` takes the dataset class's own options (image size, text length,
masking, ...) and any ``StreamingDataset`` argument (``remote``/``local``/``split``,
``shuffle``, ``predownload``, ...), or ``streams:`` — a list (or mapping) of
``Stream`` entries with ``proportion``/``repeat``/``choose`` to mix sources.
``batch_size`` is set from the trainer's device batch so resumption is exact.
"""

from __future__ import annotations

import inspect
import itertools
import os
import random
import re
import time
from typing import Any

import torch
from composer.utils import dist
from streaming import StreamingDataset
from torch.utils.data import DataLoader

from vlmo_composer import registry
from vlmo_composer.common.errors import ConfigError
from vlmo_composer.data.loader_config import LoaderConfig
from vlmo_composer.data.datasets import ImageDataset, ImageTextDataset, NLVR2Dataset, TextDataset, VQADataset
from vlmo_composer.data.local_cache import free_locals
from vlmo_composer.data.streams import make_streams, stream_arguments

registry.dataloaders.register("image_text", ImageTextDataset)
registry.dataloaders.register("text", TextDataset)
registry.dataloaders.register("image", ImageDataset)
registry.dataloaders.register("vqa", VQADataset)
registry.dataloaders.register("nlvr2", NLVR2Dataset)

SHARED_MEMORY_RACE_RETRIES = 5

# Set by the trainer, not by the YAML.
RESERVED = ("batch_size",)


def dataset_arguments(dataset_class: type) -> set[str]:
    """Options a dataset accepts: its own keyword arguments and StreamingDataset's."""
    names = set()
    for cls in (dataset_class, StreamingDataset):
        params = inspect.signature(cls.__init__).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"}
    return names


def check_dataset_arguments(cfg: LoaderConfig, where: str) -> type:
    """The dataset class for ``cfg.name``; unknown ``dataset:`` keys fail with the valid ones."""
    try:
        dataset_class = registry.dataloaders.get(cfg.name)
    except KeyError as err:
        raise ConfigError(f"{where}.name: {err.args[0]}") from None
    valid = dataset_arguments(dataset_class) - set(RESERVED)
    unknown = sorted(set(cfg.dataset) - valid)
    if unknown:
        raise ConfigError(f"unknown keys {[f'{where}.dataset.{k}' for k in unknown]}; valid keys: {sorted(valid)}")
    return dataset_class


def build_dataset(cfg: LoaderConfig, batch_size: int, where: str, cache_namespace: str) -> StreamingDataset:
    dataset_class = check_dataset_arguments(cfg, where)
    kwargs = dict(cfg.dataset)
    streams = None
    if kwargs.get("streams") is not None:
        try:
            streams = stream_arguments(kwargs["streams"], namespace=cache_namespace)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}.dataset.streams: {err}") from err
    elif kwargs.get("remote") and not kwargs.get("local"):  # else Streaming picks /tmp/<hash>, once only
        kwargs["local"] = free_locals([(str(kwargs["remote"]), kwargs.get("split"))], cache_namespace)[0]
    for attempt in itertools.count():
        if streams is not None:  # new Stream objects every attempt: Streaming writes weights into them
            try:
                kwargs["streams"] = make_streams(streams)
            except ValueError as err:
                raise ConfigError(f"{where}.dataset.streams: {err}") from err
        try:
            return dataset_class(batch_size=batch_size, **kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}.dataset: {err}") from err
        except FileExistsError as err:
            # Two jobs of one node that create datasets at the same moment can pick the same
            # Streaming shared-memory prefix ('/000123_locals'); the later one tries the next prefix.
            # Only a single-process job can: Streaming fails between two barriers of the job, so one
            # rank retrying alone would pair its barriers with the other ranks' next ones.
            if not re.match(r"/?\d{6}_", str(err.filename or "")):
                raise
            if dist.get_world_size() > 1:
                raise RuntimeError(
                    f"{where}: another job on this node created a Streaming dataset at the same moment and "
                    f"took the shared-memory prefix {err.filename}; start the run again (autoresume "
                    "continues it). Streaming supports one node per host: a multi-node launch needs one "
                    "host per node rank.") from err
            if attempt >= SHARED_MEMORY_RACE_RETRIES:
                raise
            time.sleep(random.uniform(0.05, 0.5))


def build_dataloader(
    cfg: LoaderConfig, batch_size: int, train: bool, where: str = "train_loader", cache_namespace: str = "train"
) -> DataLoader:
    dataset = build_dataset(cfg, batch_size, where, cache_namespace)
    workers = min(cfg.num_workers, os.cpu_count() or 1)  # more decoding processes than cores only contend
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=cfg.pin_memory and torch.cuda.is_available(),  # pinning without a GPU only warns
        prefetch_factor=cfg.prefetch_factor if workers > 0 else None,
        persistent_workers=cfg.persistent_workers and workers > 0,
        drop_last=train if cfg.drop_last is None else cfg.drop_last,
        timeout=cfg.timeout,
    )


def describe(dataset: Any) -> str:
    streams = getattr(dataset, "streams", [])
    sources = ", ".join(str(s.remote or s.local) for s in streams)
    return f"{type(dataset).__name__}({dataset.num_samples} samples from {sources})"
