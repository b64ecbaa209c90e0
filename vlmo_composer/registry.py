"""Registries: the names a YAML may use for each kind of component.

A user adds their own without forking::

    from vlmo_composer import registry
    registry.callbacks.register("my_callback", MyCallback)

and lists the file defining it under ``code_paths:`` in the YAML.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> factory map. Factories may be given lazily as ``"module:attr"`` strings,
    so optional dependencies (wandb, mlflow) are imported only when named."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Any] = {}

    def register(self, name: str, factory: Any = None) -> Any:
        """Register ``factory`` under ``name``; usable as a decorator."""
        if factory is None:
            return lambda f: self.register(name, f)
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._entries[name] = factory
        return factory

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} '{name}'; registered: {sorted(self._entries)}")
        entry = self._entries[name]
        if isinstance(entry, str):
            module, attr = entry.split(":")
            try:
                entry = getattr(importlib.import_module(module), attr)
            except ImportError as err:
                raise ImportError(f"{self.kind} '{name}' needs an optional dependency: {err}") from err
            self._entries[name] = entry
        return entry

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries


tasks: Registry = Registry("task")
dataloaders: Registry = Registry("dataloader")
optimizers: Registry = Registry("optimizer")
schedulers: Registry = Registry("scheduler")
algorithms: Registry = Registry("algorithm")
callbacks: Registry = Registry("callback")
loggers: Registry = Registry("logger")

schedulers.register("linear_decay_with_warmup", "composer.optim:LinearWithWarmupScheduler")
schedulers.register("cosine_decay_with_warmup", "composer.optim:CosineAnnealingWithWarmupScheduler")
schedulers.register("constant_with_warmup", "composer.optim:ConstantWithWarmupScheduler")

algorithms.register("gradient_clipping", "composer.algorithms:GradientClipping")
algorithms.register("ema", "composer.algorithms:EMA")

callbacks.register("speed_monitor", "composer.callbacks:SpeedMonitor")
callbacks.register("lr_monitor", "composer.callbacks:LRMonitor")
callbacks.register("memory_monitor", "composer.callbacks:MemoryMonitor")
callbacks.register("runtime_estimator", "composer.callbacks:RuntimeEstimator")
callbacks.register("optimizer_monitor", "composer.callbacks:OptimizerMonitor")

# Composer's, minus dict-valued metrics (logged flat by FlattenMetricDicts); pip install vlmo-composer[<name>].
loggers.register("tensorboard", "vlmo_composer.loggers.scalar_safe:TensorboardLogger")
loggers.register("wandb", "vlmo_composer.loggers.scalar_safe:WandBLogger")
loggers.register("mlflow", "vlmo_composer.loggers.scalar_safe:MLFlowLogger")
loggers.register("file", "composer.loggers:FileLogger")
loggers.register("in_memory", "composer.loggers:InMemoryLogger")
