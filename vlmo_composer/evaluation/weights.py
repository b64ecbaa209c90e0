"""Which weights an evaluation reads: the ``--weights PATH --kind KIND`` choice, the run's own
latest checkpoint, and the model a training YAML built, loaded from one of its checkpoints.

Shared by ``eval.py`` (:mod:`vlmo_composer.evaluation.cli`), ``eval.py zeroshot``
(:mod:`vlmo_composer.evaluation.zeroshot`) and
:meth:`vlmo_composer.inference.VLMoInference.from_training_config`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Optional

from vlmo_composer.checkpoints.sources import load_weights_into, local_copy, weight_kind, weight_set
from vlmo_composer.common.errors import ConfigError
from vlmo_composer.common.run_paths import latest_checkpoint
from vlmo_composer.evaluation.args import DEPRECATED_FLAGS
from vlmo_composer.training.builders import build_task, resolve_config
from vlmo_composer.training.config import TrainConfig, load_config


def default_checkpoint(cfg: TrainConfig) -> Optional[str]:
    """The newest checkpoint Composer wrote for this run (``latest-rank0.pt`` in save_folder)."""
    return latest_checkpoint(cfg.save_folder, cfg.run_name) if cfg.save_folder else None


def trained_model(
    yaml_path: str, checkpoint: Optional[str] = None, overrides=(), weights: Optional[str] = None
) -> tuple[Any, Optional[list[str]], dict[str, Any]]:
    """The exact model a training YAML built, strictly loaded from a Composer checkpoint of it, its
    VQA answers (if any) and what was loaded (:meth:`LoadReport.record`: path, step, data). ``checkpoint`` defaults to the run's ``latest-rank0.pt``; ``weights``
    picks its EMA or raw set (default: EMA when the run had it)."""
    weight_set(weights)
    cfg = load_config(yaml_path, list(overrides))
    checkpoint = checkpoint or default_checkpoint(cfg)
    if checkpoint is None:
        raise ConfigError(f"{yaml_path} has no save_folder: pass checkpoint=")
    # The task builds the model exactly as training did (e.g. VQA sizes its head from
    # the answer vocabulary); its own init_from is skipped: the checkpoint replaces it.
    local = local_copy(checkpoint)  # a missing file fails first, naming it
    task = build_task(resolve_config(cfg).without_init().on_device("cpu"))
    report = load_weights_into(task.model, "composer", local, weights=weights)  # strict: every key
    return task.model, getattr(task, "answers", None), report.record(str(checkpoint), "composer")


def chosen_weights(args: argparse.Namespace, default: Optional[str]) -> tuple[str, str]:
    """``(path, kind)`` from the arguments (the run's own checkpoint when none is named).

    An unnamed kind is ``auto``: :func:`~vlmo_composer.checkpoints.sources.fetch_source`
    guesses it from the fetched file.
    """
    given = [(flag, getattr(args, flag)) for flag in ("weights", *DEPRECATED_FLAGS) if getattr(args, flag)]
    if len(given) > 1:
        raise ConfigError(f"name the weights once: got {', '.join('--' + f for f, _ in given)}")
    if not given:
        if args.kind:
            raise ConfigError("--kind describes --weights: pass --weights too")
        if default is None:
            raise ConfigError("no weights to evaluate: pass --weights PATH [--kind KIND] (or set save_folder)")
        return default, "composer"
    flag, path = given[0]
    if flag != "weights":
        kind = DEPRECATED_FLAGS[flag]
        print(f"eval: --{flag} is deprecated; use --weights {path} --kind {kind}", file=sys.stderr)
        return path, kind
    if args.kind:
        return path, weight_kind(args.kind, "--kind")
    return path, "auto"
