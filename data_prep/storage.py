"""Where a converted dataset goes: a local folder or an object-store prefix.

The writer only needs a handful of operations (read/write a small text file,
list groups, delete a subtree, make a group's files visible), so both kinds of
destination offer exactly those. Remote groups are written to a local staging
folder, uploaded as soon as they are finished, and the staging copy removed,
so a conversion never needs the whole dataset on local disk.

Remote destinations (``s3://``, ``gs://``, ``azure://``, ``oci://``, ``hf://datasets/``,
``dbfs:/Volumes/``) go through
:mod:`vlmo_composer.stores`: the variables Streaming and Composer read (e.g.
``S3_ENDPOINT_URL``, ``STORAGE_EMULATOR_HOST``), one retry policy for every store
(``AWS_MAX_ATTEMPTS`` attempts, default 8, backoff with jitter on connection
errors, timeouts, 429/5xx and throttling; ``VLMO_S3_READ_TIMEOUT`` seconds, default
60, without a byte abandons a request and retries it), paginated listing. The
merged ``index.json`` is written locally and uploaded with the same client, last:
a dataset without it is not complete. A conversion that still fails resumes where
it stopped when run again.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.parse
from abc import ABC, abstractmethod
from typing import Any

from data_prep.common import ConversionError
from vlmo_composer import stores
from vlmo_composer.stores import DEFAULT_MAX_ATTEMPTS, READ_TIMEOUT_ENV, s3_client_config  # noqa: F401

MergeOut = str | tuple[str, str]


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

    def publish_file(self, rel: str) -> None:
        """Make a file written at ``stage_dir(rel)`` visible at ``rel`` (the merged index)."""

    def join(self, rel: str) -> str:
        return self.url.rstrip("/") + "/" + rel if rel else self.url


def open_destination(url: str, staging_dir: str | None = None) -> Destination:
    """A destination for a local path or an object-store url (``s3://``, ``gs://``, ``azure://``).

    A remote one is checked first (bucket, credentials, endpoint): a
    :class:`~data_prep.common.ConversionError` naming the URL and the variables to set,
    before anything is written.
    """
    scheme = urllib.parse.urlparse(url).scheme
    if scheme in stores.SCHEMES:
        try:
            stores.check_access(url)
        except stores.StoreError as err:
            raise ConversionError(str(err)) from None
        if staging_dir:
            os.makedirs(staging_dir, exist_ok=True)
        return RemoteDestination(url, tempfile.mkdtemp(prefix="data_prep_staging_", dir=staging_dir))
    if scheme in ("", "file"):
        return LocalDestination(url[len("file://"):] if scheme == "file" else url)
    raise ValueError(f"unsupported output location {url!r}: use a local folder or {stores.supported_stores()}")


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


class RemoteDestination(Destination):
    """A prefix on an object store (:mod:`vlmo_composer.stores`: ``s3://``, ``gs://``, ``azure://``)."""

    def __init__(self, url: str, staging_dir: str) -> None:
        self.url = url.rstrip("/")
        self.store, key = stores.open_store(self.url)
        self.bucket = self.store.bucket
        self.prefix = key.strip("/")
        self.staging_dir = staging_dir
        stores.max_attempts()  # exports AWS_MAX_ATTEMPTS for Streaming's clients too

    @property
    def client(self) -> Any:
        return self.store.client

    def child(self, name: str) -> RemoteDestination:
        return RemoteDestination(f"{self.url}/{name}", os.path.join(self.staging_dir, name))

    def _key(self, rel: str) -> str:
        return "/".join(p for p in (self.prefix, rel) if p)

    def read_text(self, rel: str) -> str | None:
        data = self.store.read_bytes(self._key(rel))
        return None if data is None else data.decode("utf-8")

    def write_text(self, rel: str, text: str) -> None:
        # A PUT is atomic: readers see the old object or the whole new one.
        self.store.write_bytes(self._key(rel), text.encode("utf-8"))

    def _keys(self, rel: str = "") -> list[str]:
        prefix = self._key(rel)
        return self.store.list(prefix + "/" if prefix else "")

    def is_empty(self) -> bool:
        prefix = self._key("")
        return not self.store.list(prefix + "/" if prefix else "", limit=1)

    def delete(self, rel: str = "") -> None:
        keys = self._keys(rel)
        if rel:
            keys += [self._key(rel)]  # the object itself when rel names a file
        self.store.delete(keys)
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
                self.store.upload_file(path, self._key(rel_path))
                if name != "index.json":
                    os.remove(path)

    def index_url(self, rel: str) -> str:
        # merge_index reads local copies only: fetched here with this store's client, so the
        # merge needs no Streaming client for the store (Streaming's Azure one has a fixed endpoint).
        local = self.stage_dir(rel)
        if not os.path.exists(local):
            os.makedirs(os.path.dirname(local), exist_ok=True)
            self.store.download_file(self._key(rel), local)
        return local

    def publish_file(self, rel: str) -> None:
        self.store.upload_file(self.stage_dir(rel), self._key(rel))

    def discard_staging(self) -> None:
        shutil.rmtree(self.staging_dir, ignore_errors=True)

    def merge_out(self) -> MergeOut:
        return self.staging_dir


S3Destination = RemoteDestination  # the name before other stores
