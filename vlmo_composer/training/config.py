"""The typed, strict training configuration (one dataclass for the whole YAML).

``load_config(yaml_path, overrides)`` reads the YAML with OmegaConf, merges dotted
command-line overrides (``optimizer.lr=1e-4``), resolves ``${variables.x}``
interpolations and converts the result into :class:`TrainConfig`. Unknown keys at
any level fail with the valid choices; free-form values belong under ``variables:``.
Top-level names are Composer's Trainer argument names wherever one exists.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from omegaconf import OmegaConf

from vlmo_composer import stores
from vlmo_composer.common.errors import ConfigError
from vlmo_composer.data.loader_config import EvalLoaderConfig, LoaderConfig
from vlmo_composer.training.object_store import ObjectStoreConfig


# ---------------------------------------------------------------- strict conversion
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        candidates = [a for a in args if a is not type(None)]
        if len(candidates) == 1:  # Optional[X]: X's own error is the useful one
            return _convert(value, candidates[0], path)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{path}: {value!r} is not a valid {' or '.join(_type_name(a) for a in args)}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)[:1] or (Any,)
        return [_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        args = typing.get_args(tp)
        return {k: _convert(v, args[1], f"{path}.{k}") for k, v in value.items()} if args else dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    return value


convert_value = _convert  # public name: builders check factory arguments with the same rules


def from_dict(cls: type, values: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown and missing keys by path."""
    where = path or "<root>"
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} fields, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        prefix = f"{path}." if path else ""
        raise ConfigError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(prefix + k for k in unknown)}; "
            f"valid keys at {where}: {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        key = f"{path}.{name}" if path else name
        if name in values:
            kwargs[name] = _convert(values[name], hints[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key {key}")
    try:
        return cls(**kwargs)
    except (ValueError, KeyError) as err:
        raise ConfigError(f"{where}: {err}") from err


def to_dict(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


# ---------------------------------------------------------------- the schema
@dataclass
class TrainConfig:
    # ---- what to train
    task: dict  # {name: <registered task>, ...task options}
    train_loader: LoaderConfig
    optimizer: dict  # {name: adamw, lr, ...}
    scheduler: dict  # {name: linear_decay_with_warmup, t_warmup, ...}
    max_duration: Union[str, int]
    global_train_batch_size: int
    variables: dict = field(default_factory=dict)
    code_paths: list[str] = field(default_factory=list)
    run_name: Optional[str] = None
    seed: int = 17
    # ---- evaluation
    eval_loaders: list[EvalLoaderConfig] = field(default_factory=list)
    # Unlabelled splits (VQA test-dev / test) that only eval.py predicts on (--split LABEL).
    predict_loaders: list[EvalLoaderConfig] = field(default_factory=list)
    eval_interval: Union[str, int] = 1
    eval_subset_num_batches: int = -1
    device_eval_batch_size: Optional[int] = None
    # ---- the step
    device_train_microbatch_size: Optional[int] = None
    precision: Optional[str] = None  # default: amp_bf16 on GPU, fp32 on CPU
    device: Optional[str] = None
    algorithms: dict = field(default_factory=dict)
    parallelism_config: Optional[dict] = None
    compile_config: Optional[dict] = None
    # ---- observability
    callbacks: dict = field(default_factory=dict)
    loggers: dict = field(default_factory=dict)
    progress_bar: bool = True
    log_to_console: bool = False
    console_log_interval: Union[str, int] = "1ba"
    python_log_level: Optional[str] = "info"
    # ---- checkpoints and resumption
    save_folder: Optional[str] = None
    save_interval: Union[str, int] = "1ep"
    save_filename: str = "ep{epoch}-ba{batch}-rank{rank}.pt"
    save_num_checkpoints_to_keep: int = -1
    save_overwrite: bool = False
    save_weights_only: bool = False
    autoresume: bool = False
    load_path: Optional[str] = None
    load_weights_only: bool = False
    load_strict_model_weights: bool = True
    load_ignore_keys: Optional[list[str]] = None
    dist_timeout: float = 600.0
    # ---- cloud faults (README "Surviving the cloud")
    object_store: ObjectStoreConfig = field(default_factory=ObjectStoreConfig)
    preemption_grace_seconds: float = 30.0  # SIGTERM -> checkpoint at the current batch, exit within this

    def __post_init__(self) -> None:
        for section in ("task", "optimizer", "scheduler"):
            if "name" not in getattr(self, section):
                raise ConfigError(f"{section}.name is required")
        if self.global_train_batch_size <= 0:
            raise ConfigError("global_train_batch_size must be positive")
        if self.autoresume and not (self.run_name and self.save_folder):
            raise ConfigError("autoresume needs run_name and save_folder (put {run_name} in save_folder)")


def apply_overrides(cfg: Any, overrides: list[str]) -> None:
    """Dotted ``key.path=value`` overrides applied in place, as OmegaConf's dotlist does.

    Each one goes through ``OmegaConf.update`` on the loaded YAML, so list entries
    are addressed by index (``eval_loaders.0.dataset.remote=...``) and a value is
    parsed as YAML (``x=[1,2]``, ``x={a: 1}``, ``x=null``). ``~key.path`` removes a
    key or a list entry (Hydra's spelling), e.g. ``~train_loader.dataset.streams.vg``.
    """
    for override in overrides:
        if override.startswith("~") and "=" not in override:
            remove_key(cfg, override[1:])
        elif "=" not in override or override.startswith(("+", "~")):
            raise ConfigError(f"overrides must look like key.path=value or ~key.path; got {override!r}")
        else:
            try:
                cfg.merge_with_dotlist([override])
            except Exception as err:  # OmegaConf's errors name the full key
                raise ConfigError(f"override {override!r}: {err}") from None


def remove_key(cfg: Any, path: str) -> None:
    parent_path, _, last = path.rpartition(".")
    parent = OmegaConf.select(cfg, parent_path) if parent_path else cfg
    key: Any = int(last) if OmegaConf.is_list(parent) and last.lstrip("-").isdigit() else last
    try:
        del parent[key]
    except Exception:
        raise ConfigError(f"~{path}: there is no such key to remove") from None


def check_object_store_paths(values: Any, path: str = "") -> None:
    """Reject ``.``/``..`` segments in store paths (``s3://``, ``dbfs:/Volumes/``, ...): stores take them literally.

    ``s3://bucket/data/../runs`` is a key under ``data/..``, not ``runs``: a stage
    saving there could never be found by the next one.
    """
    if isinstance(values, dict):
        for key, value in values.items():
            check_object_store_paths(value, f"{path}.{key}" if path else str(key))
    elif isinstance(values, list):
        for i, value in enumerate(values):
            check_object_store_paths(value, f"{path}[{i}]")
    elif stores.is_remote(values):
        segments = stores.url_path(values).split("/")
        if any(s in (".", "..") for s in segments):
            raise ConfigError(
                f"{path}: {values!r} has a '.' or '..' segment; object stores do not resolve them "
                "(the key would contain them literally): write the path out in full"
            )


def load_config(yaml_path: str, overrides: Optional[list[str]] = None) -> TrainConfig:
    """YAML + dotted overrides -> :class:`TrainConfig` (strict)."""
    cfg = OmegaConf.load(yaml_path)
    apply_overrides(cfg, list(overrides or []))
    try:
        values = OmegaConf.to_container(cfg, resolve=True)
    except Exception as err:  # an interpolation that does not resolve
        raise ConfigError(f"{yaml_path}: {err}") from err
    check_object_store_paths(values)
    return from_dict(TrainConfig, values)
