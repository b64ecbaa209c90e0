"""Run settings, checkpoint files and S3 access checked before anything heavy starts.

Composer and Streaming reject these deep inside the Trainer or a dataset, after
minutes of start-up and behind a long traceback; here each fails at once with a
:class:`ConfigError` naming the key or the file and the valid choices.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Iterator, Optional, Union

import torch

from vlmo_composer import stores
from vlmo_composer.checkpoints.io import is_checkpoint_read_error
from vlmo_composer.common.errors import ConfigError
from vlmo_composer.training.config import TrainConfig

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


def world_size() -> int:
    """Ranks of this launch, from the launcher's environment (no process group needed)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def device_batch_size(global_batch: int, world_size: int, what: str = "global_train_batch_size") -> int:
    """Each rank's share of ``global_batch``; a batch the ranks cannot split evenly fails."""
    if global_batch % world_size:
        raise ConfigError(f"{what}={global_batch} is not divisible by the {world_size} ranks")
    return global_batch // world_size


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


# ---------------------------------------------------------------- object stores
def store_locations(cfg: TrainConfig) -> Iterator[tuple[str, str]]:
    """``(key, path)`` for every dataset, checkpoint and weights path the run reads or writes (local or
    ``scheme://...``; a stream's ``local:`` is listed too, where a URL does not belong)."""
    loaders = [("train_loader", cfg.train_loader)] + [(f"eval_loaders[{i}]", l) for i, l in enumerate(cfg.eval_loaders)]
    for where, loader in loaders:
        yield f"{where}.dataset.remote", loader.dataset.get("remote")
        yield f"{where}.dataset.local", loader.dataset.get("local")
        streams = loader.dataset.get("streams") or []
        entries = streams.items() if isinstance(streams, dict) else enumerate(streams)
        for name, stream in entries:
            if isinstance(stream, dict):
                yield f"{where}.dataset.streams.{name}.remote", stream.get("remote")
                yield f"{where}.dataset.streams.{name}.local", stream.get("local")
    yield "save_folder", cfg.save_folder
    yield "load_path", cfg.load_path
    init_from = cfg.task.get("init_from")
    if isinstance(init_from, dict):
        yield "task.init_from.path", init_from.get("path")


s3_locations = store_locations  # the name before other stores


def _no_credentials(scheme: str) -> bool:
    """True when a client of ``scheme`` would find no credentials at all (checked offline)."""
    if scheme == "s3":
        import boto3

        return boto3.Session().get_credentials() is None
    if scheme == "gs":
        if os.environ.get("GCS_KEY") and os.environ.get("GCS_SECRET"):  # HMAC keys, as Streaming/Composer read them
            return False
        from google.auth import default as default_auth
        from google.auth.exceptions import DefaultCredentialsError

        try:
            default_auth()
        except DefaultCredentialsError:
            return True
        return False
    if scheme in ("azure", "azure-dl"):
        return not (os.environ.get("AZURE_ACCOUNT_NAME") or os.environ.get("AZURE_STORAGE_CONNECTION_STRING"))
    if scheme == "oci":  # the config file Streaming and Composer read
        import oci

        try:
            oci.config.from_file()
        except oci.exceptions.ConfigFileNotFound:
            return True
        except oci.exceptions.ClientError:  # a config it refuses: the dry run's access check names why
            return False
        return False
    return False  # hf (public datasets need no token), dbfs (the SDK's own configuration chain): the dry run asks


def check_store_credentials(locations: Iterable[tuple[str, Any]]) -> None:
    """Fail before any download or upload when an object-store path is used without credentials,
    or given as a stream's ``local:``."""
    checked = set()
    for key, uri in locations:
        if not isinstance(uri, str) or not stores.scheme_of(uri):  # "://" or dbfs:/
            continue
        if key.endswith(".local"):
            raise ConfigError(f"{key}: {uri} is an object-store URL; put it in "
                              f"{key[:-len('local')]}remote (local: is the cache folder on this machine)")
        scheme = stores.scheme_of(uri)
        if scheme in checked:
            continue
        checked.add(scheme)
        if _no_credentials(scheme):
            variables = S3_VARIABLES if scheme == "s3" else stores.VARIABLES.get(scheme.split("-")[0], "")
            raise ConfigError(f"{key}: {uri}: no {STORE_NAMES.get(scheme, scheme)} credentials to reach bucket "
                              f"'{bucket_of(uri)}'; set {variables}")


check_s3_credentials = check_store_credentials  # the name before other stores
STORE_NAMES = {"s3": "S3", "gs": "Google Cloud Storage", "azure": "Azure", "azure-dl": "Azure",
               "oci": "Oracle Cloud (OCI)", "hf": "Hugging Face", "dbfs": "Databricks"}


def check_store_access(locations: Iterable[tuple[str, Any]]) -> None:
    """``--dry-run``: each bucket the run uses exists and the credentials reach it (one request per bucket;
    ``s3://``, ``gs://``, ``azure://``). A one-line ConfigError naming the key, URL and variables."""
    seen = set()
    for key, uri in locations:
        if not stores.is_remote(uri) or key.endswith(".local"):
            continue
        scheme, bucket, _ = stores.split_url(uri)
        if (scheme, bucket) in seen:
            continue
        seen.add((scheme, bucket))
        try:
            stores.check_access(uri)
        except stores.StoreError as err:
            raise ConfigError(f"{key}: {err}") from None


def bucket_of(uri: str) -> str:
    try:
        return stores.split_url(uri)[1]
    except ValueError:
        return uri.split(":", 1)[1].lstrip("/").split("/", 1)[0]


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
    if isinstance(err, stores.StoreError):
        return str(err)
    if is_checkpoint_read_error(err):
        path = cfg.load_path if cfg is not None and cfg.load_path else "the checkpoint"
        return f"load_path: cannot read {path} ({str(err).splitlines()[0]}); it is truncated or not a checkpoint"
    return None


# Objectives whose negatives come from the device batch: microbatching changes what they compute.
CONTRASTIVE_TASKS = ("vl_pretrain", "retrieval")


def microbatch_warnings(cfg: TrainConfig, device_batch: int) -> list[str]:
    """What is wrong with ``device_train_microbatch_size`` for this device batch (the dry run prints it too)."""
    micro = cfg.device_train_microbatch_size
    if micro is not None and micro > device_batch:
        return [f"device_train_microbatch_size={micro} is larger than the device batch {device_batch} "
                f"(global_train_batch_size={cfg.global_train_batch_size} on {cfg.global_train_batch_size // device_batch}"
                f" rank(s)): each step is one microbatch of {device_batch}; set device_train_microbatch_size="
                f"{device_batch}"]
    if micro is not None and micro < device_batch and cfg.task["name"] in CONTRASTIVE_TASKS:
        return [f"device_train_microbatch_size={micro} < device batch {device_batch}: contrastive losses and hard "
                "negatives then see only one microbatch at a time (fewer negatives, a different objective). "
                "Keep the whole device batch in one microbatch and lower global_train_batch_size instead."]
    return []
