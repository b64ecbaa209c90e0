"""One small ``build_<kind>`` per YAML section (llm-foundry's shape)."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import logging
import os
import sys
import types
import typing
from typing import Any, Callable

import torch

from vlmo_composer import registry
from vlmo_composer.training.config import ConfigError, LoaderConfig, TrainConfig, convert_value, from_dict
from vlmo_composer.data.loaders import check_dataset_arguments, dataset_arguments
from vlmo_composer.model import VLMoConfig
from vlmo_composer.training.optim import build_adamw, param_groups
from vlmo_composer.training.run_checks import check_run_settings

# Importing these registers the built-in tasks, dataloaders and callbacks.
import vlmo_composer.callbacks  # noqa: F401
import vlmo_composer.data.loaders  # noqa: F401
import vlmo_composer.tasks  # noqa: F401

log = logging.getLogger(__name__)


def check_kwargs(factory: Callable, kwargs: dict, where: str, skip: tuple[str, ...] = ()) -> None:
    """Reject keyword arguments ``factory`` does not take, naming the key and the valid ones."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    valid = sorted(n for n, p in params.items() if n not in skip and n != "self" and p.kind is not p.VAR_POSITIONAL)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ConfigError(f"unknown keys {[f'{where}.{k}' for k in unknown]}; valid keys: {valid}")
    check_kwarg_types(factory, kwargs, where)


def check_kwarg_types(factory: Callable, kwargs: dict, where: str) -> None:
    """Values against the factory's annotations (``optimizer.lr: "5e-4x"`` fails here, not at step 1).

    Only annotations that resolve are checked, and only plain types bite: a Union
    with an unknown class (``str | Time``) accepts anything its other members do.
    """
    try:
        hints = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
    except Exception:  # forward references to optional packages
        return
    for name, value in kwargs.items():
        if name in hints:
            convert_value(value, hints[name], f"{where}.{name}")


def instantiate(reg: registry.Registry, name: str, kwargs: dict | None, where: str) -> Any:
    kwargs = dict(kwargs or {})
    check_factory(reg, name, kwargs, where)
    try:
        return reg.get(name)(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from err
    except ImportError as err:  # an optional logger's package (tensorboard, wandb, mlflow)
        raise ConfigError(f"{where} needs an optional package: pip install 'vlmo-composer[{name}]' ({err})") from None


# code_paths files already run in this process, by resolved path: a file runs once, as an import does.
IMPORTED_CODE_PATHS: dict[str, types.ModuleType] = {}


def import_code_paths(paths: list[str]) -> None:
    """Import user files so their ``registry.*.register`` calls run before building.

    Each file runs once per process (the same file named again, by another path or
    by a second resolution of the config, is not run again), so its ``register``
    calls never meet their own earlier registrations.
    """
    for path in paths:
        if not os.path.exists(path):
            raise ConfigError(f"code_paths: {path} does not exist")
        resolved = os.path.realpath(path)
        if resolved in IMPORTED_CODE_PATHS:
            continue
        name = "vlmo_user_" + os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        IMPORTED_CODE_PATHS[resolved] = module


def lookup(reg: registry.Registry, name: str, where: str) -> Any:
    """A registered factory, or a ConfigError naming the key and the registered names."""
    try:
        return reg.get(name)
    except KeyError as err:
        raise ConfigError(f"{where}: {err.args[0]}") from None
    except ImportError as err:
        raise ConfigError(f"{where}: {err}") from None


@dataclasses.dataclass(frozen=True)
class ResolvedTask:
    """A task's class, its typed config and the model config that owns every shape, resolved once."""

    task_class: type
    config: Any
    model: VLMoConfig

    def without_init(self) -> "ResolvedTask":
        """The same task without ``init_from`` (eval.py loads the weights it evaluates itself)."""
        return dataclasses.replace(self, config=dataclasses.replace(self.config, init_from=None))

    def on_device(self, init_device: str) -> "ResolvedTask":
        return dataclasses.replace(self, config=dataclasses.replace(self.config, init_device=init_device))


def resolve_task(cfg: dict) -> ResolvedTask:
    """The task class, its typed config (strict) and its model config, without building anything."""
    values = dict(cfg)
    task_class = lookup(registry.tasks, values.pop("name"), "task.name")
    task_cfg = from_dict(task_class.config_class, values, "task")
    try:
        model = task_class.model_config_for(task_cfg)
    except (KeyError, ValueError) as err:
        raise ConfigError(f"task.model: {err.args[0] if isinstance(err, KeyError) else err}") from None
    return ResolvedTask(task_class, task_cfg, model)


def build_task(cfg: dict | ResolvedTask) -> Any:
    resolved = cfg if isinstance(cfg, ResolvedTask) else resolve_task(cfg)
    try:
        return resolved.task_class(resolved.config, resolved.model)
    except (KeyError, ValueError) as err:
        raise ConfigError(f"task: {err}") from err


# A dataset argument -> the field of the task's model config that owns it.
SHAPE_OWNERS = {"image_size": "image_size", "max_text_len": "max_text_len", "patch_size": "patch_size",
                "num_labels": "vqa_num_labels"}


def derive_loader_shapes(loader: LoaderConfig, dataset_class: type, model: VLMoConfig, where: str) -> None:
    """Fill the dataset's shape arguments from ``task.model``; a different value fails naming both keys.

    The one shape rule: training, evaluation and the dry run all get here through
    :func:`resolve_config`, so a text length too long (or too short) for the model
    fails the same way in each. Datasets have no shape defaults to fall back on.
    """
    accepted = dataset_arguments(dataset_class)
    for argument, owner in SHAPE_OWNERS.items():
        owned = getattr(model, owner)
        if argument not in accepted or not owned:
            continue
        given = loader.dataset.get(argument)
        if given is not None and given != owned:
            raise ConfigError(
                f"{where}.dataset.{argument}={given} disagrees with task.model.{owner}={owned}: the task's "
                f"model config owns it (remove {where}.dataset.{argument}, or set task.model.{owner})"
            )
        loader.dataset[argument] = owned


def resolve_config(cfg: TrainConfig) -> ResolvedTask:
    """Check every section against what it configures, building nothing heavy.

    Runs before any model, dataset or process group exists, so a typo fails in a
    second with the key's path instead of after minutes of start-up. The task and
    its model config are resolved here, once; every loader's shape arguments
    (image size, text length, patch size, VQA labels) are filled in from it.
    """
    import_code_paths(cfg.code_paths)
    check_run_settings(cfg)
    resolved = resolve_task(cfg.task)
    loaders = [("train_loader", cfg.train_loader)] + [(f"eval_loaders[{i}]", l) for i, l in enumerate(cfg.eval_loaders)]
    loaders += [(f"predict_loaders[{i}]", l) for i, l in enumerate(cfg.predict_loaders)]
    for where, loader in loaders:
        derive_loader_shapes(loader, check_dataset_arguments(loader, where), resolved.model, where)
    optimizer = dict(cfg.optimizer)
    factory = lookup(registry.optimizers, optimizer.pop("name"), "optimizer.name")
    check_kwargs(factory, optimizer, "optimizer", skip=("model",))
    scheduler = dict(cfg.scheduler)
    check_factory(registry.schedulers, scheduler.pop("name"), scheduler, "scheduler")
    for reg, section, where in (
        (registry.algorithms, cfg.algorithms, "algorithms"),
        (registry.callbacks, cfg.callbacks, "callbacks"),
        (registry.loggers, cfg.loggers, "loggers"),
    ):
        for name, kwargs in section.items():
            check_factory(reg, name, kwargs or {}, f"{where}.{name}")
    return resolved


def validate_config(cfg: TrainConfig) -> VLMoConfig:
    """:func:`resolve_config`, returning the model config."""
    return resolve_config(cfg).model


def check_factory(reg: registry.Registry, name: str, kwargs: dict, where: str) -> None:
    check_kwargs(lookup(reg, name, where), kwargs, where)


def build_optimizer(cfg: dict, model: torch.nn.Module) -> torch.optim.Optimizer:
    values = dict(cfg)
    factory = lookup(registry.optimizers, values.pop("name"), "optimizer.name")
    check_kwargs(factory, values, "optimizer", skip=("model",))
    try:
        return factory(model, **values)
    except ValueError as err:
        raise ConfigError(f"optimizer: {err}") from err


@registry.optimizers.register("adamw")
def adamw(
    model: torch.nn.Module,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-8,
    weight_decay: float = 0.01,
    lr_multipliers: dict[str, float] | None = None,
    weight_decay_rule: str = "standard",
    fused: bool | None = None,
) -> torch.optim.Optimizer:
    """torch's AdamW over :func:`param_groups` (decay exclusions, lr multipliers, frozen left out),
    fused on CUDA unless ``fused: false``.

    (Composer's DecoupledAdamW does not scale the decay by the learning rate, which
    would change the paper's recipe.)
    """
    groups = param_groups(model, lr, weight_decay, lr_multipliers, weight_decay_rule)
    return build_adamw(groups, lr, betas, eps, fused)


def build_scheduler(cfg: dict) -> Any:
    values = dict(cfg)
    return instantiate(registry.schedulers, values.pop("name"), values, "scheduler")


def build_named(reg: registry.Registry, section: dict, where: str) -> list:
    """``{name: kwargs}`` sections (algorithms, callbacks, loggers)."""
    return [instantiate(reg, name, kwargs, f"{where}.{name}") for name, kwargs in section.items()]
