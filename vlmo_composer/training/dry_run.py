"""``train.py --dry-run`` / ``eval.py --dry-run``: check and count everything a run would use, train nothing.

Validates the config, opens every stream's ``index.json`` (local, or fetched
alone from ``s3://``; no shard is read), builds the task's model on ``meta``,
checks the data's shapes by the rule training uses (the model config owns them),
and prints what the run would do: model size, streams and their sample counts,
batch sizes, steps, analytic GFLOP per sample, checkpoints and what is loaded.
What would run but not as meant prints a ``warning:`` line and the check goes
on: a local checkpoint to load that does not exist yet (an earlier stage not
run yet: the line names the YAML beside this one that writes it), a microbatch
larger than the device batch.
"""

from __future__ import annotations

import inspect
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from vlmo_composer import registry, stores
from vlmo_composer.training.builders import ResolvedTask, build_task, resolve_config
from vlmo_composer.callbacks.elastic import describe_resume, run_shape
from vlmo_composer.checkpoints.official import describe_size
from vlmo_composer.training.config import ConfigError, LoaderConfig, TrainConfig, load_config
from vlmo_composer.data.streams import _named_entries
from vlmo_composer.common.run_paths import latest_checkpoint, run_folder
from vlmo_composer.loggers.metrics_file import FILENAME as METRICS_FILENAME
from vlmo_composer.model import VLMoConfig
from vlmo_composer.checkpoints.io import check_checkpoint_file
from vlmo_composer.checkpoints.hub import is_hub_name
from vlmo_composer.checkpoints.pretrained import describe_source, is_pretrained_name
from vlmo_composer.training.run_checks import (
    check_s3_credentials,
    check_store_access,
    device_batch_size,
    microbatch_warnings,
    s3_locations,
    world_size,
)


@dataclass
class StreamCount:
    where: str  # remote or local directory, with the split
    samples: int  # rows in the index
    per_epoch: float  # rows drawn per epoch after proportion / repeat / choose


def index_samples(remote: Optional[str], local: Optional[str], split: Optional[str], where: str) -> int:
    """Sample count of one stream from its ``index.json`` (the local copy if there is one, else the remote's)."""
    parts = [split] if split else []
    if local and os.path.isfile(os.path.join(local, *parts, "index.json")):
        path = os.path.join(local, *parts, "index.json")
    elif remote:
        from streaming.base.storage import CloudDownloader

        path = os.path.join(tempfile.mkdtemp(prefix="vlmo_dry_run_"), "index.json")
        uri = "/".join([remote.rstrip("/"), *parts, "index.json"])
        try:
            CloudDownloader.direct_download(uri, path, timeout=60)
        except FileNotFoundError:
            raise ConfigError(f"{where}: no index.json at {uri}") from None
    else:
        raise ConfigError(f"{where}: no index.json in {os.path.join(local or '', *parts)} (and no remote)")
    try:
        shards = json.loads(open(path).read())["shards"]
        return sum(int(shard["samples"]) for shard in shards)
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{where}: {path} is not an MDS index.json ({err})") from None


def count_streams(loader: LoaderConfig, where: str) -> list[StreamCount]:
    """Every stream of a loader with its rows and its rows per epoch (Streaming's weighting rules)."""
    dataset = loader.dataset
    if dataset.get("streams"):
        entries = _named_entries(dataset["streams"])
    else:
        entries = [(where, {k: dataset.get(k) for k in ("remote", "local", "split")})]
    counts = []
    for name, stream in entries:
        split = stream.get("split") or dataset.get("split")
        label = "/".join(str(p) for p in [stream.get("remote") or stream.get("local"), split] if p)
        samples = index_samples(stream.get("remote"), stream.get("local"), split, f"{where} stream {name}")
        if stream.get("repeat") is not None:
            per_epoch = samples * float(stream["repeat"])
        elif stream.get("choose") is not None:
            per_epoch = float(stream["choose"])
        else:
            per_epoch = float(samples)
        counts.append(StreamCount(label, samples, per_epoch))
    proportions = [s.get("proportion") for _, s in entries]
    if all(p is not None for p in proportions):
        size = dataset.get("epoch_size") or sum(c.samples for c in counts)
        for count, proportion in zip(counts, proportions):
            count.per_epoch = size * float(proportion) / sum(float(p) for p in proportions)
    elif dataset.get("epoch_size"):
        total = sum(c.per_epoch for c in counts)
        for count in counts:
            count.per_epoch *= float(dataset["epoch_size"]) / total
    return counts


def effective_dataset_value(loader: LoaderConfig, key: str) -> Any:
    """The value a dataset will use: the YAML's, else the dataset class's default."""
    if key in loader.dataset:
        return loader.dataset[key]
    param = inspect.signature(registry.dataloaders.get(loader.name).__init__).parameters.get(key)
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def sample_batch(model: VLMoConfig, text_len: int, mlm_prob: float) -> dict[str, torch.Tensor]:
    """One full-length sample of every input a task may read (FLOPs depend on shapes only)."""
    labels = torch.full((1, text_len), -100)
    labels[:, : max(1, round(mlm_prob * text_len))] = 1
    ids = torch.zeros(1, text_len, dtype=torch.long)
    image = torch.zeros(1, model.in_chans, model.image_size, model.image_size)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "mlm_input_ids": ids, "mlm_labels": labels,
            "pixel_values": image, "pixel_values_2": image}


def describe_model(cfg: TrainConfig, resolved: ResolvedTask) -> tuple[Any, list[str]]:
    """The task built on ``meta`` (no memory, no weights loaded) and its summary lines."""
    task = build_task(resolved.without_init().on_device("meta"))
    config = task.model.config
    total = sum(p.numel() for p in task.parameters())
    trainable = sum(p.numel() for p in task.parameters() if p.requires_grad)
    lines = [f"model: task {cfg.task['name']}, {describe_size(config.hidden_size, config.num_layers)}, "
             f"{config.image_size} px, patch {config.patch_size}, text {config.max_text_len}: "
             f"{total:,} parameters ({trainable:,} trainable)"]
    return task, lines


def describe_loaders(cfg: TrainConfig, train: bool) -> tuple[float, list[str]]:
    """Stream lines of the train loader (when ``train``) and every eval loader; returns train samples per epoch.

    Shapes were checked by :func:`resolve_config` (``derive_loader_shapes``), the rule training uses too.
    """
    loaders = ([("train_loader", cfg.train_loader)] if train else []) + [
        (f"eval_loaders[{i}] {l.label}", l) for i, l in enumerate(cfg.eval_loaders)]
    lines, train_epoch = [], 0.0
    for where, loader in loaders:
        key = where.split(" ")[0]
        counts = count_streams(loader, key)
        epoch = sum(c.per_epoch for c in counts)
        train_epoch = epoch if key == "train_loader" else train_epoch
        lines.append(f"{where}: {loader.name}, {epoch:,.0f} samples per epoch")
        for c in counts:
            share = f", {c.per_epoch:,.0f} per epoch ({c.per_epoch / epoch:.1%})" if len(counts) > 1 else ""
            lines.append(f"  {c.where}: {c.samples} samples{share}")
    return train_epoch, lines


def describe_steps(cfg: TrainConfig, epoch_samples: float, world: int) -> list[str]:
    from composer.core import Time, TimeUnit

    device_batch = device_batch_size(cfg.global_train_batch_size, world)
    micro = cfg.device_train_microbatch_size or device_batch
    per_epoch = int(epoch_samples // cfg.global_train_batch_size)
    if per_epoch == 0:
        raise ConfigError(f"global_train_batch_size={cfg.global_train_batch_size} is larger than the "
                          f"{epoch_samples:.0f} samples of an epoch of train_loader: not one full batch")
    lines = [f"batch: global {cfg.global_train_batch_size}, device {device_batch} on {world} rank(s), "
             f"microbatch {micro}"]
    lines += [f"warning: {message}" for message in microbatch_warnings(cfg, device_batch)]
    duration = Time.from_input(cfg.max_duration, TimeUnit.EPOCH)
    unit, value = duration.unit, duration.value
    if unit == TimeUnit.EPOCH:
        lines.append(f"max_duration {cfg.max_duration} = {value * per_epoch} batches ({per_epoch} per epoch)")
    else:
        batches = value if unit == TimeUnit.BATCH else value // cfg.global_train_batch_size if unit == TimeUnit.SAMPLE else None
        epochs = f" = {batches / per_epoch:.2f} epochs" if batches is not None else ""
        lines.append(f"max_duration {cfg.max_duration}{epochs} ({per_epoch} batches per epoch)")
    return lines


def describe_flops(task: Any, cfg: TrainConfig) -> str:
    config = task.model.config
    text_len = cfg.train_loader.dataset.get("max_text_len") or config.max_text_len  # filled by resolve_config
    mlm_prob = effective_dataset_value(cfg.train_loader, "mlm_prob") or 0.15
    try:
        flops = task.flops_per_batch(sample_batch(config, text_len, mlm_prob))
    except (NotImplementedError, KeyError):
        return "compute: no analytic FLOP count for this task"
    return f"compute: {flops / 1e9:.2f} GFLOP per training sample (analytic, forward + backward, text {text_len})"


def producing_yaml(path: str, yaml_path: str, overrides: Sequence[str] = ()) -> Optional[str]:
    """The YAML beside ``yaml_path`` (same folder or a sibling one, as ``yamls/pretrain`` and
    ``yamls/finetune``) whose run saves into the folder of the local checkpoint ``path``, with
    the command line's ``variables.*`` overrides; None when none does."""
    here = Path(yaml_path).resolve()
    target = os.path.dirname(os.path.abspath(path))
    variables = [o for o in overrides if o.startswith("variables.")]
    candidates = sorted({*here.parent.glob("*.yaml"), *here.parent.parent.glob("*/*.yaml")} - {here})
    for candidate in candidates[:100]:
        try:
            other = load_config(str(candidate), variables)
        except Exception:  # not a training YAML, or one these variables do not fit
            continue
        folder = other.save_folder
        if folder and not stores.has_scheme(folder) and os.path.abspath(run_folder(folder, other.run_name)) == target:
            relative = os.path.relpath(candidate)
            return str(candidate) if relative.startswith("..") else relative
    return None


def check_checkpoint_to_load(path: str, key: str, yaml_path: Optional[str], overrides: Sequence[str]) -> list[str]:
    """Nothing, or a warning line for a local checkpoint that does not exist yet (an unreadable one fails)."""
    if is_hub_name(path):  # hf-hub:org/name: fetched through huggingface_hub when the run starts
        return []
    if stores.has_scheme(path) or is_pretrained_name(path) or os.path.exists(path):
        check_checkpoint_file(path, key)
        return []
    producer = producing_yaml(path, yaml_path, overrides) if yaml_path else None
    if producer:
        return [f"warning: {key}: checkpoint {path} does not exist yet; {producer} writes it (run that stage "
                "first, or training stops here)"]
    return [f"warning: {key}: checkpoint {path} does not exist (yet); training stops here unless it does by then"]


def describe_checkpoints(cfg: TrainConfig, yaml_path: Optional[str] = None, overrides: Sequence[str] = ()) -> list[str]:
    lines = []
    if cfg.save_folder:
        folder = run_folder(cfg.save_folder, cfg.run_name)
        keep = cfg.save_num_checkpoints_to_keep
        lines.append(f"checkpoints: {folder} (every {cfg.save_interval}, keep {'all' if keep < 0 else keep} "
                     f"locally); metrics: {folder}/{METRICS_FILENAME}")
        if cfg.autoresume:
            latest = latest_checkpoint(cfg.save_folder, cfg.run_name)
            found = ("" if stores.has_scheme(latest) else " (found)" if os.path.exists(latest)
                     else " (none yet: starts fresh)")
            lines.append(f"autoresume: resumes from {latest} when it exists{found}")
            if found == " (found)":
                lines.append(describe_resume(latest, current_shape(cfg)))
    else:
        lines.append("checkpoints: none (no save_folder)")
    init_from = cfg.task.get("init_from")
    if init_from:
        lines += check_checkpoint_to_load(init_from["path"], "task.init_from.path", yaml_path, overrides)
        where = describe_source(str(init_from["path"])) or init_from["path"]  # a name: its URL and cache state
        which = ""
        if init_from.get("kind") == "composer":  # a run with EMA holds two sets
            which = f" ({init_from.get('weights') or 'EMA when the run had it, else raw'})"
        lines.append(f"init_from: {init_from.get('kind')} weights from {where}{which}")
    if cfg.load_path:
        lines += check_checkpoint_to_load(cfg.load_path, "load_path", yaml_path, overrides)
        if cfg.load_weights_only:
            how = (f"weights only, strict={cfg.load_strict_model_weights}"
                   + (f", ignoring {cfg.load_ignore_keys}" if cfg.load_ignore_keys else ""))
        else:
            how = "full state: continues its step count, optimizer, schedule and data position"
        lines.append(f"load_path: {cfg.load_path} ({how})")
        if not cfg.load_weights_only and (stores.has_scheme(cfg.load_path) or os.path.exists(cfg.load_path)):
            lines.append(describe_resume(cfg.load_path, current_shape(cfg)))
    return lines


def current_shape(cfg: TrainConfig) -> dict[str, Any]:
    """The run's record as this launch would save it (ranks and nodes from the launcher's environment)."""
    world = world_size()
    return run_shape(cfg, world, max(1, world // int(os.environ.get("LOCAL_WORLD_SIZE", world))))


def train_summary(cfg: TrainConfig, yaml_path: str, overrides: Sequence[str] = ()) -> str:
    """Everything ``train.py`` would do with ``cfg`` (``yaml_path`` with ``overrides``); raises
    ConfigError on what would fail, warns in the summary on what would run but not as meant."""
    resolved = resolve_config(cfg)  # once: every description below reads this one
    check_s3_credentials(s3_locations(cfg))
    check_store_access(s3_locations(cfg))
    task, lines = describe_model(cfg, resolved)
    epoch_samples, loader_lines = describe_loaders(cfg, train=True)
    lines += loader_lines + describe_steps(cfg, epoch_samples, world_size())
    lines += [describe_flops(task, cfg)] + describe_checkpoints(cfg, yaml_path, overrides)
    return "\n".join([f"dry run of {yaml_path}:", *lines, "dry run: nothing trained"])


def eval_summary(cfg: TrainConfig, yaml_path: str, weights: str) -> str:
    """What ``eval.py`` would evaluate (``weights``: a description of the chosen checkpoint)."""
    resolved = resolve_config(cfg)
    check_s3_credentials(s3_locations(cfg))
    check_store_access((key, uri) for key, uri in s3_locations(cfg) if key.startswith("eval_loaders"))
    _, lines = describe_model(cfg, resolved)
    _, loader_lines = describe_loaders(cfg, train=False)
    lines += loader_lines + [f"weights: {weights}"]
    return "\n".join([f"dry run of {yaml_path} (evaluation):", *lines, "dry run: nothing evaluated"])
