"""The object-store retry policy of a training run, and errors that name the store.

Three clients talk to S3 during training, each with its own retry layer:

* Streaming's shard downloads: botocore ``adaptive`` mode (fixed by Streaming),
  ``AWS_MAX_ATTEMPTS`` attempts per request, the socket read timeout is the
  stream's ``download_timeout``; then Streaming's own ``download_retry`` re-runs
  the whole download.
* Composer's checkpoint uploader (``CheckpointSaver.remote_uploader``, run in
  threads here, see :func:`run_uploads_in_threads`) and the
  ``RemoteUploaderDownloader`` that uploads the ``latest`` pointer and downloads
  the checkpoint on autoresume: both get the botocore ``client_config`` below.
  Composer's own ``num_attempts`` retries only ``ObjectStoreTransientError``, which
  ``S3ObjectStore`` never raises, so for S3 botocore's attempts are the only
  retries of an upload.
* ``data_prep`` and weight sources (see ``vlmo_composer/stores.py``): the same environment variables.

``AWS_MAX_ATTEMPTS`` / ``AWS_RETRY_MODE`` set by the user win over the config.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable

from composer.loggers import RemoteUploaderDownloader

from vlmo_composer.callbacks.preemption import LATEST_POLL_ATTRIBUTE

RETRY_MODES = ("standard", "adaptive", "legacy")


@dataclass
class ObjectStoreConfig:
    """``object_store:`` in the YAML: how hard to retry S3 before a run gives up."""

    max_attempts: int = 8  # botocore attempts per request (first try included), every client
    retry_mode: str = "standard"  # Composer's clients; Streaming always uses "adaptive"
    connect_timeout: float = 10.0  # seconds, Composer's clients
    read_timeout: float = 60.0  # seconds without a byte before a request is retried, Composer's clients
    # How often the ``latest`` pointer's uploader asks whether the checkpoint it names has
    # landed (Composer polls every 30 s, so a run's end waited up to 30 s per checkpoint).
    latest_poll_seconds: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"object_store.max_attempts must be >= 1, got {self.max_attempts}")
        if self.retry_mode not in RETRY_MODES:
            raise ValueError(f"object_store.retry_mode must be one of {RETRY_MODES}, got {self.retry_mode!r}")
        if self.connect_timeout <= 0 or self.read_timeout <= 0 or self.latest_poll_seconds <= 0:
            raise ValueError("object_store timeouts must be positive")


def export_retry_environment(cfg: ObjectStoreConfig) -> None:
    """Make every boto3 client this process and its children create retry ``max_attempts``
    times (Streaming and Composer set only the retry mode, so botocore reads the count
    from the environment). A user's own ``AWS_MAX_ATTEMPTS`` is kept."""
    os.environ.setdefault("AWS_MAX_ATTEMPTS", str(cfg.max_attempts))


def client_config(cfg: ObjectStoreConfig) -> dict[str, Any]:
    """``botocore.config.Config`` keyword arguments for Composer's ``S3ObjectStore``."""
    attempts = int(os.environ.get("AWS_MAX_ATTEMPTS", cfg.max_attempts))
    mode = os.environ.get("AWS_RETRY_MODE", cfg.retry_mode)
    return {"retries": {"mode": mode, "total_max_attempts": attempts},
            "connect_timeout": cfg.connect_timeout, "read_timeout": cfg.read_timeout}


def remote_uploader_downloader(save_folder: str, cfg: ObjectStoreConfig) -> RemoteUploaderDownloader | None:
    """The logger Composer would create for an ``s3://`` save folder, with our retry policy."""
    if not save_folder.startswith("s3://"):
        return None
    bucket = save_folder[len("s3://"):].split("/", 1)[0]
    # Threads, not Composer's default spawned processes: this logger carries only the ``latest``
    # pointer (checkpoints go through CheckpointSaver's own uploader), and a spawned worker
    # re-imports torch and Composer (~10 s per run, at start and at close).
    return RemoteUploaderDownloader(bucket_uri=f"s3://{bucket}", use_procs=False,
                                    backend_kwargs={"bucket": bucket, "client_config": client_config(cfg)})


# Composer 0.32's RemoteUploader members replaced by run_uploads_in_threads (private: checked).
UPLOADER_EXECUTORS = ("upload_executor", "check_remote_files_exist_executor")


def run_uploads_in_threads(uploader: Any) -> None:
    """Run Composer's checkpoint uploads, and its polls for their arrival, in threads of this process.

    Composer runs them in spawned processes, each of which re-imports torch and Composer
    (about 8 s of CPU) at a run's first checkpoint: the first upload, and a preempted run's
    last one inside its grace period, waited for that. The work is network I/O (boto3 and the
    other clients release the GIL), the functions and their failure reporting are Composer's
    own; only the executors and the failure flag (a ``Manager`` event) change.
    """
    for name in (*UPLOADER_EXECUTORS, "is_remote_upload_failed"):
        if not hasattr(uploader, name):
            raise AttributeError(f"RemoteUploader has no {name} in this Composer version")
    for name in UPLOADER_EXECUTORS:
        processes = getattr(uploader, name)
        setattr(uploader, name, ThreadPoolExecutor(max_workers=getattr(processes, "_max_workers", 2),
                                                   thread_name_prefix=f"checkpoint-{name}"))
        processes.shutdown(wait=False)  # no worker was started yet: they start at the first submit
    uploader.is_remote_upload_failed = threading.Event()


def configure_checkpoint_uploads(saver: Any, cfg: ObjectStoreConfig) -> None:
    """Give Composer's checkpoint uploads the same botocore config (they build their client
    from ``backend_kwargs`` for every upload) and run them in threads, and poll for the
    ``latest`` pointer's checkpoint every ``latest_poll_seconds``."""
    uploader = getattr(saver, "remote_uploader", None)
    if uploader is not None:
        run_uploads_in_threads(uploader)
    if uploader is not None and uploader.remote_backend_name == "s3":
        uploader.backend_kwargs["client_config"] = client_config(cfg)
    if saver is not None:
        if not hasattr(saver, LATEST_POLL_ATTRIBUTE):
            raise AttributeError(f"CheckpointSaver has no {LATEST_POLL_ATTRIBUTE} in this Composer version")
        setattr(saver, LATEST_POLL_ATTRIBUTE, cfg.latest_poll_seconds)


STORE_ERROR_MODULES = ("botocore", "boto3", "s3transfer", "urllib3")


def is_store_error(err: BaseException) -> bool:
    """True when ``err`` or anything it was raised from comes from the S3 client stack."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if type(err).__module__.split(".")[0] in STORE_ERROR_MODULES or "botocore.exceptions" in str(err):
            return True  # (the text: an error re-raised from a DataLoader worker keeps only its traceback)
        err = err.__cause__ or err.__context__
    return False


def describe_store_failure(err: BaseException, stores: Iterable[str]) -> str:
    """One paragraph for the user: which store failed, with what, and what to do."""
    endpoint = os.environ.get("S3_ENDPOINT_URL", "the default AWS endpoint")
    attempts = os.environ.get("AWS_MAX_ATTEMPTS", "?")
    listed = ", ".join(sorted(set(stores))) or "(none configured)"
    return (f"object store failure: {type(err).__name__}: {err}\n"
            f"  stores this run uses: {listed} (endpoint {endpoint}); each request was tried up to "
            f"{attempts} times (AWS_MAX_ATTEMPTS).\n"
            "  Checkpoints already in the store are intact: run the same command again once the store "
            "answers (autoresume continues from the latest one).")
