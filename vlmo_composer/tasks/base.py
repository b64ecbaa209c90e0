"""What every task shares: building the VLMo, initialising it, freezing, FLOPs.

A task is a Composer ``ComposerModel`` whose ``self.model`` is a :class:`VLMo`, so
checkpoints of every stage and fine-tune share the ``model.*`` key space and can be
chained with ``load_path`` + ``load_weights_only``.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from composer.models import ComposerModel
from composer.utils import dist

from vlmo_composer.checkpoints.io import LoadReport, check_checkpoint_file
from vlmo_composer.checkpoints.sources import check_weight_set, load_weights_into, weight_kind
from vlmo_composer.common.keyed_draws import row_keys
from vlmo_composer.model import NAMED_CONFIGS, VLMo, VLMoConfig

log = logging.getLogger(__name__)

@dataclass
class InitFrom:
    """Weights to start from before training (``load_path`` resumes Composer checkpoints)."""

    kind: str  # a kind of checkpoints/sources.py: official | beit | safetensors | composer (ours, e.g. stage 3)
    path: str  # local path or s3://... (downloaded once)
    allow_missing: list[str] = field(default_factory=list)
    allow_unexpected: list[str] = field(default_factory=list)
    # composer only: ema | raw; unset = the run's EMA weights when it had EMA, else its only set.
    weights: Optional[str] = None

    def __post_init__(self) -> None:
        self.kind = weight_kind(self.kind, "init_from.kind")
        check_weight_set(self.kind, self.weights, "init_from.weights")


@dataclass
class TaskConfig:
    """Options every task accepts."""

    model: dict = field(default_factory=lambda: {"size": "base"})  # {size, ...VLMoConfig overrides}
    init_from: Optional[InitFrom] = None
    trainable: Optional[list[str]] = None  # parameter-name globs; None = the task's default
    # "meta" builds without memory; FSDP then materialises each block with param_init_fn.
    init_device: str = "cpu"
    # Cut the batch's text to its longest caption (less compute on CPU; on GPUs fixed
    # shapes are usually faster and avoid a host sync, so it is off by default).
    trim_text_padding: bool = False

    def __post_init__(self) -> None:
        if self.init_device not in ("cpu", "meta"):
            raise ValueError(f"init_device '{self.init_device}' is not one of ('cpu', 'meta')")
        if self.init_device == "meta" and self.init_from is not None:
            raise ValueError("init_from cannot load into a model built on 'meta'; use load_path, or init_device: cpu")


def build_model_config(model: dict, task_defaults: dict[str, Any]) -> VLMoConfig:
    """``VLMoConfig.named(size)`` with the task's head layout, then the user's overrides.

    The task default ``without_vl_ffn`` builds no VL-FFN (stages 1 and 2, as the
    official code does) unless the user sets ``vl_ffn_start`` explicitly.
    """
    values = dict(model)
    size = values.pop("size", "base")
    defaults = dict(task_defaults)
    if defaults.pop("without_vl_ffn", False):
        layers = values.get("num_layers", NAMED_CONFIGS.get(size, {}).get("num_layers", 0))
        defaults["vl_ffn_start"] = layers
    return VLMoConfig.named(size, **{**defaults, **values})


class VLMoTask(ComposerModel):
    """Base class: subclasses set ``config_class``, ``model_defaults`` and ``default_trainable``."""

    config_class: type = TaskConfig
    # Head layout and sizes this task needs (users may still override them under model:).
    model_defaults: dict[str, Any] = {}
    # Globs of trainable parameters (None: everything).
    default_trainable: Optional[tuple[str, ...]] = None
    # Globs init_from may skip: heads the task adds or the source lacks.
    init_allow_missing: tuple[str, ...] = ()
    init_allow_unexpected: tuple[str, ...] = ()

    def __init__(self, cfg: TaskConfig, model_config: Optional[VLMoConfig] = None) -> None:
        super().__init__()
        self.cfg = cfg
        # The key of (seed, global step) of the step in progress (common.keyed_draws.step_key), set
        # by callbacks.elastic.KeyedDrawStep: the step's draws are keyed by it and the sample ids.
        self.draw_key: Optional[torch.Tensor] = None
        with torch.device(cfg.init_device):
            self.model = VLMo(model_config or self.model_config_for(cfg))
        if cfg.init_from is not None:
            self.init_report = self.initialise(cfg.init_from)
            log.info("init_from %s (%s):\n%s", cfg.init_from.path, cfg.init_from.kind, self.init_report)
        if cfg.trainable is not None:
            self.freeze(cfg.trainable, strict=True)
        else:
            self.freeze(self.default_trainable, strict=False)

    @classmethod
    def model_config_for(cls, cfg: TaskConfig) -> VLMoConfig:
        """The model config this task builds: the one owner of image size, text length, patch size, labels."""
        return build_model_config(cfg.model, cls.model_defaults)

    @property
    def config(self) -> VLMoConfig:
        return self.model.config

    # ------------------------------------------------------------------ init & freezing
    def initialise(self, init: InitFrom, announce: bool = True) -> LoadReport:
        """Load ``init`` with this task's rules for which heads may be absent or extra
        (``announce``: say on stderr which set of a Composer checkpoint was read)."""
        if init.kind != "safetensors":  # an exported folder, checked by its loader
            check_checkpoint_file(str(init.path), "init_from.path")
        return load_weights_into(
            self.model, init.kind, init.path,
            allow_missing=[*self.init_allow_missing, *init.allow_missing],
            allow_unexpected=[*self.init_allow_unexpected, *init.allow_unexpected],
            weights=init.weights,
            announce=announce,
        )

    def freeze(self, trainable: Optional[tuple[str, ...] | list[str]], strict: bool = True) -> None:
        """Only parameters matching a glob train; the rest leave the optimiser and DDP.

        ``strict``: a user's glob that matches nothing is an error (a task's defaults
        may name parameters some sizes lack, e.g. absolute positions).
        """
        if trainable is None:
            return
        names = [n for n, _ in self.model.named_parameters()]
        unmatched = [p for p in trainable if not any(fnmatch.fnmatchcase(n, p) for n in names)]
        if unmatched and strict:
            raise ValueError(f"trainable patterns {unmatched} match no parameter of the model")
        for name, param in self.model.named_parameters():
            param.requires_grad_(any(fnmatch.fnmatchcase(name, p) for p in trainable))

    # ------------------------------------------------------------------ batches
    TEXT_KEYS = ("input_ids", "attention_mask", "mlm_input_ids", "mlm_labels")

    def prepare(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Trim text padding when configured (relative positions make any length valid)."""
        mask = batch.get("attention_mask")
        if not self.cfg.trim_text_padding or mask is None or mask.ndim != 2:
            return batch
        length = mask.sum(dim=1).max()
        if self.training and dist.get_world_size() > 1:
            # ITM's hard-negative gather needs one text length on every rank: trim to the global longest.
            dist.all_reduce(length, reduce_operation="MAX")
        length = int(length)
        return {k: v[:, :length] if k in self.TEXT_KEYS else v for k, v in batch.items()}

    def draw_keys(self, batch: dict[str, Any], stream: int = 0) -> Optional[torch.Tensor]:
        """[B] keys of the model's drop path and dropout for the batch's rows in pass ``stream``
        (keyed by step and sample id: the same masks on any number of ranks); None (the
        generator) outside training or without a step key or sample ids."""
        if not self.training or self.draw_key is None or "sample_index" not in batch:
            return None
        return row_keys(self.draw_key, batch["sample_index"], stream)

    # ------------------------------------------------------------------ Composer API
    def loss(self, outputs: dict, batch: Any) -> dict[str, torch.Tensor]:
        """Forward already computed every term; Composer back-propagates ``total`` and logs the rest."""
        return outputs["losses"]

    def get_metrics(self, is_train: bool = False) -> dict:
        """No training metrics (Composer would run them every microbatch); tasks add eval ones."""
        return {}

    def update_metric(self, batch: Any, outputs: Any, metric) -> None:
        metric.update(**outputs)

    def flops_per_batch(self, batch: dict) -> float:
        raise NotImplementedError
