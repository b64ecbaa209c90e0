"""Run settings, checkpoint files and S3 access checked before anything heavy starts.

Composer and Streaming reject these deep inside the Trainer or a dataset, after
minutes of start-up and behind a long traceback; here each fails at once with a
:class:`ConfigError` naming the key or the file and the valid choices.
"""

from __future__ import annotations

import os
import zipfile
from typing import Any, Iterator, Optional, Union

import torch

from vlmo_composer.training.config import ConfigError, TrainConfig

DURATION_UNITS = ("ep", "ba", "sp", "tok")
INTERVAL_UNITS = DURATION_UNITS + ("dur",)
PRECISIONS = ("fp32", "amp_fp16", "amp_bf16", "amp_fp8")
DEVICES = ("cpu", "gpu", "mps", "tpu", "neuron", "hpu")
S3_VARIABLES = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and S3_ENDPOINT_URL for an S3-compatible endpoint)"


def check_duration(value: Union[str, int], key: str, units: tuple[str, ...] = DURATION_UNITS) -> None:
    """A positive Composer time (``3ep``, ``1000ba``; an integer counts epochs) in one of ``units``."""
    from composer.core import Time, TimeUnit

    try:
        time = Time.from_input(value, TimeUnit.EPOCH)
    except (ValueError, TypeError):
        raise ConfigError(f"{key}: {value!r} is not a duration; write a positive number with one of the units "
                          f"{list(units)}, e.g. 3ep or 1000ba") from None
    if time.unit.value not in units:
        raise ConfigError(f"{key}: unit '{time.unit.value}' of {value!r} is not allowed here; use one of {list(units)}")
    if time.value <= 0:
        raise ConfigError(f"{key}: {value!r} must be positive")


def check_run_settings(cfg: TrainConfig, device: Optional[str] = None) -> None:
    """Durations, precision and device (``device``: the resolved one, when known)."""
    check_duration(cfg.max_duration, "max_duration")
    check_duration(cfg.eval_interval, "eval_interval", INTERVAL_UNITS)
    check_duration(cfg.save_interval, "save_interval", INTERVAL_UNITS)
    check_duration(cfg.console_log_interval, "console_log_interval", ("ep", "ba"))
    if cfg.device is not None and cfg.device.lower() not in DEVICES:
        raise ConfigError(f"device: '{cfg.device}' is not one of {list(DEVICES)}")
    if cfg.precision is not None and cfg.precision not in PRECISIONS:
        raise ConfigError(f"precision: '{cfg.precision}' is not one of {list(PRECISIONS)}")
    device = device or cfg.device
    if device == "cpu" and cfg.precision not in (None, "fp32"):
        raise ConfigError(f"precision: '{cfg.precision}' needs a GPU; on device cpu use fp32")
    if device == "gpu" and not torch.cuda.is_available():
        raise ConfigError("device: 'gpu' but no CUDA GPU is visible; use device: cpu (with precision: fp32)")


# ---------------------------------------------------------------- checkpoint files
def check_checkpoint_file(path: str, key: str) -> None:
    """A local checkpoint must exist and look like a complete ``torch.save`` file.

    ``torch.save`` writes a zip archive (a truncated one has no central directory);
    files from before PyTorch 1.6 are a bare pickle, which starts with byte 0x80.
    """
    from vlmo_composer.checkpoints.pretrained import is_pretrained_name

    if "://" in path or is_pretrained_name(path):  # checked when downloaded
        return
    if not os.path.isfile(path):
        raise ConfigError(f"{key}: checkpoint {path} does not exist")
    if zipfile.is_zipfile(path):
        return
    with open(path, "rb") as fh:
        if fh.read(1) == b"\x80":
            return
    raise ConfigError(f"{key}: {path} is not a readable PyTorch checkpoint (truncated, or not written by torch.save)")


CHECKPOINT_READ_ERRORS = ("PytorchStreamReader", "invalid load key", "Ran out of input", "unpickling", "zip archive")


def is_checkpoint_read_error(err: BaseException) -> bool:
    import pickle

    if isinstance(err, (pickle.UnpicklingError, EOFError, zipfile.BadZipFile)):
        return True
    return isinstance(err, (RuntimeError, ValueError)) and any(s in str(err) for s in CHECKPOINT_READ_ERRORS)


# ---------------------------------------------------------------- S3
def s3_locations(cfg: TrainConfig) -> Iterator[tuple[str, str]]:
    """``(key, s3://...)`` for every object-store path the run reads or writes."""
    loaders = [("train_loader", cfg.train_loader)] + [(f"eval_loaders[{i}]", l) for i, l in enumerate(cfg.eval_loaders)]
    for where, loader in loaders:
        yield f"{where}.dataset.remote", loader.dataset.get("remote")
        streams = loader.dataset.get("streams") or []
        entries = streams.items() if isinstance(streams, dict) else enumerate(streams)
        for name, stream in entries:
            if isinstance(stream, dict):
                yield f"{where}.dataset.streams.{name}.remote", stream.get("remote")
    yield "save_folder", cfg.save_folder
    yield "load_path", cfg.load_path
    init_from = cfg.task.get("init_from")
    if isinstance(init_from, dict):
        yield "task.init_from.path", init_from.get("path")


def check_s3_credentials(locations: Iterator[tuple[str, Any]]) -> None:
    """Fail before any download or upload when an ``s3://`` path is used without credentials."""
    s3 = [(key, str(uri)) for key, uri in locations if isinstance(uri, str) and uri.startswith("s3://")]
    if not s3:
        return
    import boto3

    if boto3.Session().get_credentials() is None:
        key, uri = s3[0]
        raise ConfigError(f"{key}: {uri}: no S3 credentials to reach bucket '{bucket_of(uri)}'; set {S3_VARIABLES}")


def bucket_of(uri: str) -> str:
    return uri.split("://", 1)[1].split("/", 1)[0]


def short_error(err: BaseException, cfg: Optional[TrainConfig] = None) -> Optional[str]:
    """A one-line message for failures users cause (S3 access, unreadable checkpoints), else None."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
    except ImportError:  # pragma: no cover - boto3 is a dependency
        return None
    if isinstance(err, NoCredentialsError):
        return f"no S3 credentials; set {S3_VARIABLES}"
    if isinstance(err, (ClientError, BotoCoreError)):
        return f"S3 error: {err} (check the bucket, {S3_VARIABLES})"
    if is_checkpoint_read_error(err):
        path = cfg.load_path if cfg is not None and cfg.load_path else "the checkpoint"
        return f"load_path: cannot read {path} ({str(err).splitlines()[0]}); it is truncated or not a checkpoint"
    return None
