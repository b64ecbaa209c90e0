"""A dataloader's section of the YAML (``train_loader``, ``eval_loaders[i]``, ``predict_loaders[i]``).

Part of :class:`vlmo_composer.training.config.TrainConfig`; it lives with the data
layer because :mod:`vlmo_composer.data.loaders` builds loaders from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class LoaderConfig:
    """A dataloader: a registered dataset ``name`` and its keyword arguments."""

    name: str
    dataset: dict = field(default_factory=dict)
    num_workers: int = 2
    pin_memory: bool = True
    prefetch_factor: Optional[int] = 2
    persistent_workers: bool = True
    timeout: float = 0.0
    drop_last: Optional[bool] = None  # default: True for training, False for evaluation


@dataclass
class EvalLoaderConfig(LoaderConfig):
    label: str = "eval"
    metric_names: Optional[list[str]] = None
