"""The training command: YAML -> TrainConfig -> builders -> Composer Trainer.

``composer train.py yamls/pretrain/vl_base.yaml optimizer.lr=1e-4`` calls
:func:`main`; tests call :func:`build_trainer` with the same config a user runs.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
import time
import traceback
import warnings
from typing import Optional

import torch
from composer import Evaluator, Trainer
from composer.utils import dist, get_device, reproducibility

from vlmo_composer.training.builders import (
    ResolvedTask,
    build_named,
    build_optimizer,
    build_scheduler,
    build_task,
    resolve_config,
)
from vlmo_composer import registry, stores
from vlmo_composer.callbacks import (
    DataProvenance,
    FlattenMetricDicts,
    MidEpochRngRestore,
    Preempted,
    PreemptionCheckpoint,
)
from vlmo_composer.callbacks.elastic import KeyedDrawStep, RunShape, check_resume, fit_rng_states, run_shape
from vlmo_composer.training.config import ConfigError, TrainConfig, load_config
from vlmo_composer.data.loaders import build_dataloader
from vlmo_composer.training.dry_run import train_summary
from vlmo_composer.checkpoints.io import check_checkpoint_file
from vlmo_composer.common.run_paths import latest_checkpoint, run_folder
from vlmo_composer.training.run_checks import (
    check_s3_credentials,
    device_batch_size,
    microbatch_warnings,
    s3_locations,
    short_error,
)
from vlmo_composer.training import run_report
from vlmo_composer.training.usage import early_answer
from vlmo_composer.training.object_store import (
    configure_checkpoint_uploads,
    describe_store_failure,
    export_retry_environment,
    is_store_error,
    remote_uploader_downloader,
)
from vlmo_composer.data.local_cache import cache_namespace
from vlmo_composer.loggers import print_run_line

log = logging.getLogger("vlmo_composer")



def on_cpu(device: Optional[str]) -> bool:
    return device == "cpu" or (device is None and not torch.cuda.is_available())


def default_precision(device: Optional[str]) -> str:
    return "fp32" if on_cpu(device) else "amp_bf16"


def check_remote_resumption(cfg: TrainConfig) -> None:
    if cfg.autoresume and stores.is_remote(cfg.save_folder) and not cfg.save_overwrite:
        warnings.warn(
            "autoresume to an object store with save_overwrite: false can fail after a preemption: the "
            "'latest' pointer trails the uploads, so a resumed run may save a checkpoint name that already "
            "exists. Set save_overwrite: true.",
            stacklevel=2,
        )


def check_microbatching(cfg: TrainConfig, device_batch: int) -> None:
    for message in microbatch_warnings(cfg, device_batch):
        warnings.warn(message, stacklevel=2)


def fit_to_cpu(cfg: TrainConfig, resolved: ResolvedTask) -> tuple[Optional[dict], str, ResolvedTask]:
    """The parallelism config, precision and task to use; on CPU, what only GPUs can run is left out.

    So any recipe can be tried small on a CPU as shipped: an FSDP section
    (GPU-only in Composer) is dropped and ``amp_*`` precision becomes ``fp32``,
    each with a warning; a model meant for ``meta`` init (materialised by FSDP)
    is then built on ``cpu``.
    """
    parallelism, precision = cfg.parallelism_config, cfg.precision or default_precision(cfg.device)
    if on_cpu(cfg.device):
        if parallelism and parallelism.get("fsdp") is not None:
            warnings.warn("running on CPU: parallelism_config.fsdp is ignored (FSDP needs GPUs)", stacklevel=2)
            parallelism = {k: v for k, v in parallelism.items() if k != "fsdp"} or None
        if precision.startswith("amp"):
            warnings.warn(f"running on CPU: precision {precision} is GPU-only, using fp32", stacklevel=2)
            precision = "fp32"
    if resolved.config.init_device == "meta" and not (parallelism and parallelism.get("fsdp") is not None):
        resolved = resolved.on_device("cpu")  # nothing would materialise a meta model
    return parallelism, precision, resolved


def build_evaluators(cfg: TrainConfig, batch_size: int) -> list[Evaluator]:
    evaluators = []
    for i, loader in enumerate(cfg.eval_loaders):
        where = f"eval_loaders[{i}]"
        dataloader = build_dataloader(loader, batch_size, train=False, where=where,
                                      cache_namespace=cache_namespace(cfg.run_name, loader.label))
        kwargs = {"metric_names": loader.metric_names} if loader.metric_names else {}
        evaluators.append(Evaluator(label=loader.label, dataloader=dataloader, **kwargs))
    return evaluators


def build_trainer(cfg: TrainConfig) -> Trainer:
    """Every component from the config; nothing trains until ``fit()``."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if cfg.python_log_level:
        logging.getLogger("vlmo_composer").setLevel(cfg.python_log_level.upper())
    parallelism, precision, resolved = fit_to_cpu(cfg, resolve_config(cfg))
    check_s3_credentials(s3_locations(cfg))
    if cfg.load_path:
        check_checkpoint_file(cfg.load_path, "load_path")
    export_retry_environment(cfg.object_store)
    reproducibility.seed_all(cfg.seed)
    dist.initialize_dist(get_device(cfg.device), timeout=cfg.dist_timeout)
    world = dist.get_world_size()
    train_batch = device_batch_size(cfg.global_train_batch_size, world)
    check_microbatching(cfg, train_batch)
    check_remote_resumption(cfg)

    task = build_task(resolved)
    train_loader = build_dataloader(cfg.train_loader, train_batch, train=True,
                                    cache_namespace=cache_namespace(cfg.run_name, "train"))
    evaluators = build_evaluators(cfg, cfg.device_eval_batch_size or train_batch)
    optimizer = build_optimizer(cfg.optimizer, task)
    scheduler = build_scheduler(cfg.scheduler)
    algorithms = build_named(registry.algorithms, cfg.algorithms, "algorithms")
    rng_restore = MidEpochRngRestore()
    shape = RunShape(run_shape(cfg, world, max(1, world // dist.get_local_world_size())))
    callbacks = build_named(registry.callbacks, {**run_report.DEFAULT_CALLBACKS, **cfg.callbacks}, "callbacks")
    callbacks += [FlattenMetricDicts(), rng_restore, shape, KeyedDrawStep(),
                  # the data each checkpoint was trained on, in it
                  DataProvenance(cfg.train_loader.dataset, [(c.label, c.dataset) for c in cfg.eval_loaders])]
    loggers = build_named(registry.loggers, cfg.loggers, "loggers") + run_report.console_and_file_loggers(cfg)
    checkpoint_store = remote_uploader_downloader(cfg.save_folder or "", cfg.object_store)
    if checkpoint_store is not None:  # Composer would make one with its defaults; it warns that ours exists
        loggers.append(checkpoint_store)
        warnings.filterwarnings("ignore", message="There already exists a RemoteUploaderDownloader")
    preemption = PreemptionCheckpoint(cfg.preemption_grace_seconds)
    if cfg.autoresume:
        drop_stale_autoresume_copy(cfg)

    trainer = Trainer(
        model=task,
        train_dataloader=train_loader,
        eval_dataloader=evaluators or None,
        eval_interval=cfg.eval_interval,
        eval_subset_num_batches=cfg.eval_subset_num_batches,
        max_duration=cfg.max_duration,
        optimizers=optimizer,
        schedulers=scheduler,
        step_schedulers_every_batch=True,
        algorithms=algorithms,
        callbacks=callbacks,
        loggers=loggers,
        run_name=cfg.run_name,
        seed=cfg.seed,
        device=cfg.device,
        precision=precision,
        device_train_microbatch_size=min(cfg.device_train_microbatch_size or train_batch, train_batch),
        parallelism_config=parallelism,
        compile_config=cfg.compile_config,
        progress_bar=False,  # run_report.console_and_file_loggers adds readable ones
        log_to_console=False,
        save_folder=cfg.save_folder,
        save_interval=cfg.save_interval,
        save_filename=cfg.save_filename,
        save_num_checkpoints_to_keep=cfg.save_num_checkpoints_to_keep,
        save_overwrite=cfg.save_overwrite,
        save_weights_only=cfg.save_weights_only,
        autoresume=cfg.autoresume,
        load_path=cfg.load_path,
        load_weights_only=cfg.load_weights_only,
        load_strict_model_weights=cfg.load_strict_model_weights,
        load_ignore_keys=cfg.load_ignore_keys,
        dist_timeout=cfg.dist_timeout,
    )
    configure_checkpoint_uploads(trainer._checkpoint_saver, cfg.object_store)
    trainer.state.callbacks.append(preemption)  # after Composer's CheckpointSaver: sees its save first
    if shape.saved is not None:  # resumed from a full checkpoint: the rules of callbacks/elastic.py
        shape.elastic_line = check_resume(shape.saved, shape.current)
    if trainer._rng_state is not None and len(trainer._rng_state) != world:
        trainer._rng_state = fit_rng_states(trainer._rng_state, world, trainer.state.rank_zero_seed,
                                            int(trainer.state.timestamp.batch))
    if trainer._rng_state is not None and int(trainer.state.timestamp.batch_in_epoch) > 0:
        rng_restore.rng_state, trainer._rng_state = trainer._rng_state, None
    return trainer


def drop_stale_autoresume_copy(cfg: TrainConfig) -> None:
    """Composer downloads a remote ``latest`` checkpoint to ``./<save_folder>/`` and reuses that
    copy if it exists, so a second preemption would resume from the first one's checkpoint."""
    if not stores.is_remote(cfg.save_folder):
        return
    copy = Path(latest_checkpoint(cfg.save_folder, cfg.run_name, dist.get_global_rank()))
    if copy.exists():
        copy.unlink()


def summary(trainer: Trainer, seconds: float, start: tuple[int, int] = (0, 0)) -> str:
    """A short end-of-run report: steps (this process and total), losses, evaluation, last checkpoint."""
    state = trainer.state
    lines = [run_report.steps_line(trainer, *start, seconds)]
    losses = {k: float(v) for k, v in (state.total_loss_dict or {}).items()}
    if losses:
        lines.append("last losses: " + ", ".join(f"{k.split('/')[-1]} {v:.4f}" for k, v in losses.items()))
    flattener = next((c for c in state.callbacks if isinstance(c, FlattenMetricDicts)), None)
    for label, values in (flattener.last_values if flattener else {}).items():
        prefix = f"metrics/{label}/"
        lines.append(f"last eval {label}: " + ", ".join(f"{k.removeprefix(prefix)} {float(v):.4f}" for k, v in values.items()))
    saver = getattr(trainer, "_checkpoint_saver", None)
    if saver is not None and saver.saved_checkpoints:
        lines.append(f"last checkpoint: {saver.saved_checkpoints[-1]}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    answered = early_answer(argv)  # --help, no config, a config that is not there
    if answered is not None:
        return answered
    dry_run = "--dry-run" in argv
    argv = [a for a in argv if a != "--dry-run"]
    cfg = None
    try:
        cfg = load_config(argv[0], argv[1:])
        if dry_run:
            summary_text = train_summary(cfg, argv[0], argv[1:])
            if os.environ.get("RANK", "0") == "0":
                print(summary_text)
            return 0
        trainer = build_trainer(cfg)
        return fit(cfg, trainer)
    except (ConfigError, FileNotFoundError) as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # failures users cause (S3 access, unreadable checkpoints): one line, exit 2
        message = short_error(err, cfg)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


def fit(cfg: TrainConfig, trainer: Trainer) -> int:
    """Train to ``max_duration`` and print the summary (rank 0)."""
    rank_zero = dist.get_global_rank() == 0
    if rank_zero:
        for line in run_report.start_lines(cfg, trainer):
            print_run_line(line)  # a resumed run's progress bar is already open
    start = time.time()
    if trainer.state.timestamp >= trainer.state.max_duration:  # an autoresumed run that had finished
        print_run_line(f"run {trainer.state.run_name} already trained to {cfg.max_duration}; nothing to do")
        trainer.close()
        return 0
    first = int(trainer.state.timestamp.batch), int(trainer.state.timestamp.sample)
    try:
        trainer.fit()
    except Preempted as stop:
        trainer.close()
        print_run_line(f"run {trainer.state.run_name}: {stop}; {resume_hint(cfg, stop.checkpoint)}")
        return stop.exit_code
    except Exception as err:
        if not is_store_error(err):
            raise
        traceback.print_exc()
        print(describe_store_failure(err, object_stores(cfg)), file=sys.stderr, flush=True)
        return 1
    if rank_zero:
        print_run_line(summary(trainer, time.time() - start, first))
    trainer.close()
    return 0


def resume_hint(cfg: TrainConfig, checkpoint: Optional[str]) -> str:
    """How to go on from a run stopped by a signal."""
    if checkpoint is None:
        return "nothing to resume from (set save_folder to be able to)"
    if cfg.autoresume:
        return "run the same command to resume"
    return "run the same command with autoresume=true to resume from it"


def object_stores(cfg: TrainConfig) -> list[str]:
    """The remote locations a run reads or writes (for error messages)."""
    return [run_folder(uri, cfg.run_name) if key == "save_folder" else uri
            for key, uri in s3_locations(cfg) if stores.has_scheme(uri)]
