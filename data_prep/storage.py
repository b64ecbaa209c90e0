"""Where a converted dataset goes: a local folder or an ``s3://`` prefix.

The writer only needs a handful of operations (read/write a small text file,
list groups, delete a subtree, make a group's files visible), so both kinds of
destination offer exactly those. Remote groups are written to a local staging
folder, uploaded as soon as they are finished, and the staging copy removed,
so a conversion never needs the whole dataset on local disk.

Any S3-compatible store works: the endpoint comes from ``S3_ENDPOINT_URL``,
as Streaming and Composer read it (plain boto3 does not, so it is passed here).

Retry policy (a flaky or throttling store): every request is tried up to
``AWS_MAX_ATTEMPTS`` times (default 8, exported for the Streaming uploader that
``merge_index`` uses too) in botocore's ``standard`` mode (``AWS_RETRY_MODE``):
exponential backoff with jitter on connection errors, timeouts, 500/502/503/504
and throttling (``SlowDown``). A request that sends no byte for
``VLMO_S3_READ_TIMEOUT`` seconds (default 60) is abandoned and retried. A
conversion that still fails resumes where it stopped when run again.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.parse
from abc import ABC, abstractmethod
from typing import Any

MergeOut = str | tuple[str, str]
DEFAULT_MAX_ATTEMPTS = 8
READ_TIMEOUT_ENV = "VLMO_S3_READ_TIMEOUT"


def s3_client_config() -> Any:
    """The botocore config of every client data_prep creates (see the module doc)."""
    from botocore.config import Config

    os.environ.setdefault("AWS_MAX_ATTEMPTS", str(DEFAULT_MAX_ATTEMPTS))
    return Config(retries={"mode": os.environ.get("AWS_RETRY_MODE", "standard"),
                           "total_max_attempts": int(os.environ["AWS_MAX_ATTEMPTS"])},
                  connect_timeout=10, read_timeout=float(os.environ.get(READ_TIMEOUT_ENV, 60)))


class Destination(ABC):
    """The root of one dataset (one split), local or remote."""

    url: str

    @abstractmethod
    def child(self, name: str) -> Destination:
        """The destination of a sub-folder (e.g. one split)."""

    @abstractmethod
    def read_text(self, rel: str) -> str | None:
        """Contents of a small file, or None when it does not exist."""

    @abstractmethod
    def write_text(self, rel: str, text: str) -> None:
        """Write a small file so that readers see all of it or nothing."""

    @abstractmethod
    def is_empty(self) -> bool:
        """True when nothing exists under this root."""

    @abstractmethod
    def delete(self, rel: str = "") -> None:
        """Remove a file or a whole subtree (the root itself when ``rel`` is empty)."""

    @abstractmethod
    def stage_dir(self, rel: str) -> str:
        """A local folder to write ``rel`` into, before :meth:`publish_dir`."""

    @abstractmethod
    def publish_dir(self, rel: str) -> None:
        """Make the files written to ``stage_dir(rel)`` visible at ``rel``."""

    def discard_staging(self) -> None:
        """Remove local staging copies once everything is published."""

    @abstractmethod
    def index_url(self, rel: str) -> str | tuple[str, str]:
        """What Streaming's ``merge_index`` reads a group index from (path, url or both)."""

    @abstractmethod
    def merge_out(self) -> MergeOut:
        """The ``out`` argument for Streaming's ``merge_index`` at this root."""

    def join(self, rel: str) -> str:
        return self.url.rstrip("/") + "/" + rel if rel else self.url


def open_destination(url: str, staging_dir: str | None = None) -> Destination:
    """A destination for a local path or an ``s3://bucket/prefix`` url."""
    scheme = urllib.parse.urlparse(url).scheme
    if scheme == "s3":
        if staging_dir:
            os.makedirs(staging_dir, exist_ok=True)
        return S3Destination(url, tempfile.mkdtemp(prefix="data_prep_staging_", dir=staging_dir))
    if scheme in ("", "file"):
        return LocalDestination(url[len("file://"):] if scheme == "file" else url)
    raise ValueError(f"unsupported output location {url!r}: use a local folder or s3://bucket/prefix")


class LocalDestination(Destination):
    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.url = self.path

    def child(self, name: str) -> LocalDestination:
        return LocalDestination(os.path.join(self.path, name))

    def _abs(self, rel: str) -> str:
        return os.path.join(self.path, rel) if rel else self.path

    def read_text(self, rel: str) -> str | None:
        try:
            with open(self._abs(rel), encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def write_text(self, rel: str, text: str) -> None:
        path = self._abs(rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)

    def is_empty(self) -> bool:
        return not os.path.isdir(self.path) or not os.listdir(self.path)

    def delete(self, rel: str = "") -> None:
        path = self._abs(rel)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)

    def stage_dir(self, rel: str) -> str:
        return self._abs(rel)

    def publish_dir(self, rel: str) -> None:
        pass  # written in place

    def index_url(self, rel: str) -> str:
        return self._abs(rel)

    def merge_out(self) -> MergeOut:
        return self.path


class S3Destination(Destination):
    def __init__(self, url: str, staging_dir: str) -> None:
        parsed = urllib.parse.urlparse(url)
        if not parsed.netloc:
            raise ValueError(f"s3 url {url!r} has no bucket")
        self.url = url.rstrip("/")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.staging_dir = staging_dir
        self._client: Any = None
        self._client_pid = -1
        os.environ.setdefault("AWS_MAX_ATTEMPTS", str(DEFAULT_MAX_ATTEMPTS))  # Streaming's uploader too

    def __getstate__(self) -> dict[str, Any]:
        # boto3 clients are neither picklable nor safe to share across processes.
        return {**self.__dict__, "_client": None, "_client_pid": -1}

    @property
    def client(self) -> Any:
        if self._client is None or self._client_pid != os.getpid():
            import boto3

            self._client = boto3.client("s3", endpoint_url=os.environ.get("S3_ENDPOINT_URL"),
                                        config=s3_client_config())
            self._client_pid = os.getpid()
        return self._client

    def child(self, name: str) -> S3Destination:
        return S3Destination(f"{self.url}/{name}", os.path.join(self.staging_dir, name))

    def _key(self, rel: str) -> str:
        return "/".join(p for p in (self.prefix, rel) if p)

    def read_text(self, rel: str) -> str | None:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(rel))
        except self.client.exceptions.NoSuchKey:
            return None
        return obj["Body"].read().decode("utf-8")

    def write_text(self, rel: str, text: str) -> None:
        # A PUT is atomic: readers see the old object or the whole new one.
        self.client.put_object(Bucket=self.bucket, Key=self._key(rel), Body=text.encode("utf-8"))

    def _keys(self, rel: str = "") -> list[str]:
        prefix = self._key(rel)
        prefix = prefix + "/" if prefix else ""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    def is_empty(self) -> bool:
        prefix = self._key("")
        listing = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix + "/" if prefix else "", MaxKeys=1)
        return not listing.get("Contents")

    def delete(self, rel: str = "") -> None:
        keys = self._keys(rel)
        if rel:
            keys += [self._key(rel)]  # the object itself when rel names a file
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        shutil.rmtree(os.path.join(self.staging_dir, rel) if rel else self.staging_dir,
                      ignore_errors=True)

    def stage_dir(self, rel: str) -> str:
        return os.path.join(self.staging_dir, rel)

    def publish_dir(self, rel: str) -> None:
        """Upload a finished group, then drop its local shards (its index stays for the merge)."""
        local = self.stage_dir(rel)
        for root, _, files in os.walk(local):
            for name in sorted(files):
                path = os.path.join(root, name)
                rel_path = os.path.relpath(path, self.staging_dir).replace(os.sep, "/")
                self.client.upload_file(path, self.bucket, self._key(rel_path))
                if name != "index.json":
                    os.remove(path)

    def index_url(self, rel: str) -> tuple[str, str]:
        # merge_index reads the local copy when present; fetching missing ones here
        # reuses one client (merge_index would open a new one per file).
        local = self.stage_dir(rel)
        if not os.path.exists(local):
            os.makedirs(os.path.dirname(local), exist_ok=True)
            self.client.download_file(self.bucket, self._key(rel), local)
        return (local, self.join(rel))

    def discard_staging(self) -> None:
        shutil.rmtree(self.staging_dir, ignore_errors=True)

    def merge_out(self) -> MergeOut:
        return (self.staging_dir, self.url)
