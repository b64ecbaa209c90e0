"""What a training run tells its user besides the loggers' numbers.

The console and metrics-file destinations every run gets, the callbacks that
feed them (learning rate, throughput), and one line each for a resumed run
(from where) and a weights-only load (which keys were missing or unexpected).
"""

from __future__ import annotations

import fnmatch
import re
import warnings

import torch
from composer import Trainer
from composer.loggers import LoggerDestination

from vlmo_composer import stores
from vlmo_composer.callbacks.elastic import RunShape
from vlmo_composer.common.run_paths import latest_checkpoint
from vlmo_composer.training.config import TrainConfig
from vlmo_composer.loggers import MetricsFile, ReadableConsoleLogger, ReadableProgressBar

# lr and throughput in the console by default; a YAML's own entries replace these.
DEFAULT_CALLBACKS: dict[str, dict] = {"lr_monitor": {}, "speed_monitor": {"window_size": 10}}

# The Trainer warns when given console loggers it did not build; these are ours on purpose.
warnings.filterwarnings("ignore", message=r"Specifying the (ProgressBarLogger|ConsoleLogger) via `loggers`")


def console_and_file_loggers(cfg: TrainConfig) -> list[LoggerDestination]:
    """Readable replacements for Composer's progress bar / console logger, and ``metrics.jsonl``."""
    loggers: list[LoggerDestination] = []
    if cfg.progress_bar:
        loggers.append(ReadableProgressBar())
    if cfg.log_to_console:
        loggers.append(ReadableConsoleLogger(log_interval=cfg.console_log_interval))
    if cfg.save_folder:
        loggers.append(MetricsFile(cfg.save_folder))
    return loggers


def checkpoint_model_keys(path: str) -> list[str]:
    """Model keys of a local Composer checkpoint, read memory-mapped (no tensor is copied)."""
    state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    return list(state["state"]["model"])


def key_patterns(keys: list[str]) -> list[str]:
    """Keys with block numbers folded (``blocks.*.mlp_vl.fc1.weight``), so a report stays short."""
    return sorted({re.sub(r"\.\d+\.", ".*.", k) for k in keys})


def load_line(cfg: TrainConfig, trainer: Trainer) -> str:
    """``loaded weights from X: N tensors; missing ...; unexpected ...`` for a weights-only ``load_path``."""
    path = cfg.load_path
    if stores.has_scheme(path):
        return f"loaded weights from {path} (strict={cfg.load_strict_model_weights})"
    ignored = [p.removeprefix("state/model/") for p in cfg.load_ignore_keys or []]
    loaded = {k for k in checkpoint_model_keys(path) if not any(fnmatch.fnmatchcase(k, p) for p in ignored)}
    own = set(trainer.state.model.state_dict())
    missing, unexpected = sorted(own - loaded), sorted(loaded - own)
    parts = [f"loaded weights from {path}: {len(own & loaded)} tensors"]
    if missing:
        parts.append(f"missing, left at initialisation: {key_patterns(missing)}")
    if unexpected:
        parts.append(f"unexpected, not loaded: {key_patterns(unexpected)}")
    return "; ".join(parts)


def resume_line(cfg: TrainConfig, trainer: Trainer) -> str:
    timestamp = trainer.state.timestamp
    if cfg.autoresume:
        source = latest_checkpoint(cfg.save_folder, cfg.run_name)
    else:
        source = cfg.load_path
    return (f"resumed run {trainer.state.run_name} from {source} at epoch {int(timestamp.epoch)}, "
            f"batch {int(timestamp.batch)} (sample {int(timestamp.sample)})")


def start_lines(cfg: TrainConfig, trainer: Trainer) -> list[str]:
    """What the run starts from, when it does not start from scratch."""
    if int(trainer.state.timestamp.batch) > 0:
        shape = next((c for c in trainer.state.callbacks if isinstance(c, RunShape)), None)
        elastic = shape.elastic_line if shape else None  # the world size changed
        return [resume_line(cfg, trainer)] + ([elastic] if elastic else [])
    if cfg.load_path and cfg.load_weights_only:
        return [load_line(cfg, trainer)]
    return []


def steps_line(trainer: Trainer, start_batch: int, start_sample: int, seconds: float) -> str:
    """Steps and samples of this process next to the run's total (they differ after a resume)."""
    state = trainer.state
    batch, sample = int(state.timestamp.batch), int(state.timestamp.sample)
    steps, samples = batch - start_batch, sample - start_sample
    return (f"run {state.run_name}: {steps} step{'' if steps == 1 else 's'} in this process "
            f"(batches {start_batch} -> {batch} of {state.max_duration.to_timestring()}), {samples} samples in {seconds:.0f}s "
            f"({samples / max(seconds, 1e-9):.1f} samples/s)")
