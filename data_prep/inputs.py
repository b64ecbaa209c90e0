"""A converter's inputs, on a local disk or an object store, read the same way (issue 17).

Every input flag goes through this module (``common.py``, ``images.py``,
``line_ranges.py`` and the few listings the converters make), so a flag that
takes a local file or folder takes a store URL too, with no per-converter code:

* ``s3://``, ``gs://``, ``azure://``: a file's size and version (its etag) come
  from one HEAD, a byte range from one ranged GET (boto3 ``Range``,
  google-cloud-storage ``download_as_bytes(start, end)``, azure
  ``download_blob(offset, length)``), a folder is a key prefix read with one
  paginated listing; nothing is copied to disk.
* ``oci://``, ``hf://datasets/``, ``dbfs:/Volumes/``: their libraries move
  whole files, so a file is downloaded once per process into a temporary
  folder (removed at exit) and read there; its version is its content's hash.

A local file's version is its mtime. A store that cannot be used as asked
(missing bucket, refused credentials, unreachable endpoint) is a
:class:`ConversionError`: one line naming the URL and the variables to set.
"""

from __future__ import annotations

import atexit
import contextlib
import fnmatch
import functools
import glob
import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from data_prep.errors import ConversionError
from vlmo_composer import stores

READ_CHUNK = 8 << 20
"""Bytes per ranged GET when a store file is read line by line (the planning pass, a range)."""
GLOB_CHARS = "*?["


@dataclass(frozen=True)
class InputInfo:
    """What tells, without reading a file, that its content changed."""

    size: int
    version: str
    """Local: the mtime in ns; a store: the etag (oci/hf/dbfs: the content's hash)."""


def is_remote(path: str) -> bool:
    return stores.is_remote(path)


@contextlib.contextmanager
def _store_errors(url: str) -> Iterator[None]:
    """A store failure inside the block: one line naming the URL (and what to set) when it can be named."""
    try:
        with stores.named_errors(url):
            yield
    except stores.StoreError as e:
        raise ConversionError(str(e)) from None


def _open(url: str) -> tuple[stores.Store, str]:
    try:
        return stores.open_store(url)
    except ValueError as e:
        raise ConversionError(str(e)) from None


def _whole_files(store: stores.Store) -> bool:
    """A store whose library only moves whole files (no ranged reads, no stat)."""
    return isinstance(store, stores.FileTransferStore)


def missing(path: str, message: str) -> ConversionError:
    """The error for an input that is not there: why its store cannot be read (missing bucket,
    credentials, endpoint) when that is the cause, else ``message``."""
    if is_remote(path):
        try:
            stores.check_access(path)
        except (stores.StoreError, ValueError) as e:
            return ConversionError(str(e))
    return ConversionError(message)


# ------------------------------------------------------------------- whole-file stores
def process_temp_folder(kind: str) -> str:
    """This process's folder for the store files it copies (``kind``: what for), removed when the
    process exits normally."""
    root = os.path.join(tempfile.gettempdir(), f"data_prep_{kind}_{os.getpid()}")
    if not os.path.isdir(root):
        os.makedirs(root, exist_ok=True)
        atexit.register(shutil.rmtree, root, True)
    return root


@functools.lru_cache(maxsize=64)
def _local_copy(url: str, pid: int) -> str | None:
    """This process's copy of a file on a whole-file store (None: no such object)."""
    store, key = _open(url)
    folder = os.path.join(process_temp_folder("inputs"), hashlib.sha1(url.encode()).hexdigest()[:16])
    local = os.path.join(folder, os.path.basename(key))
    os.makedirs(os.path.dirname(local), exist_ok=True)
    with _store_errors(url):
        try:
            store.download_file(key, local)
        except FileNotFoundError:
            return None
    return local


def _copy(url: str) -> str | None:
    return _local_copy(url, os.getpid())


# ------------------------------------------------------------------------------- files
def stat(path: str) -> InputInfo | None:
    """Size and version of a file, or None when there is none."""
    if not is_remote(path):
        try:
            st = os.stat(path)
        except OSError:
            return None
        return InputInfo(st.st_size, str(st.st_mtime_ns)) if os.path.isfile(path) else None
    store, key = _open(path)
    if _whole_files(store):
        local = _copy(path)
        if local is None:
            return None
        with open(local, "rb") as f:
            return InputInfo(os.path.getsize(local), hashlib.file_digest(f, "sha1").hexdigest())
    with _store_errors(path):
        info = store.stat(key)
    return None if info is None else InputInfo(info.size, info.version)


def require_stat(path: str, what: str) -> InputInfo:
    info = stat(path)
    if info is None:
        raise missing(path, f"{what} not found: {path}")
    return info


def read_bytes(path: str) -> bytes | None:
    """The whole file, or None when there is none (a local folder or unreadable file raises OSError)."""
    if not is_remote(path):
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None
    store, key = _open(path)
    if _whole_files(store):
        local = _copy(path)
        return None if local is None else read_bytes(local)
    with _store_errors(path):
        return store.read_bytes(key)


def read_range(path: str, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of a file (one ranged GET on a store)."""
    if is_remote(path):
        store, key = _open(path)
        if not _whole_files(store):
            with _store_errors(path):
                return store.read_range(key, start, end)
    with open_binary(path, end=end) as f:
        f.seek(start)
        return f.read(max(0, end - start))


class _RangeReader(io.RawIOBase):
    """A store object as a seekable binary file: each read is one ranged GET."""

    def __init__(self, url: str, store: stores.Store, key: str, size: int) -> None:
        super().__init__()
        self.url, self.store, self.key, self.size, self.pos = url, store, key, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self.size - self.pos)
        if n <= 0:
            return 0
        with _store_errors(self.url):
            data = self.store.read_range(self.key, self.pos, self.pos + n)
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)


def open_binary(path: str, info: InputInfo | None = None, end: int | None = None) -> BinaryIO:
    """A seekable binary reader of a file (``info``: its stat, when the caller has it); on a store,
    one that reads nothing at or past ``end`` (a range's reader fetches that range only).

    Raises FileNotFoundError when there is no such file (a store problem: ConversionError).
    """
    if not is_remote(path):
        return open(path, "rb")  # noqa: SIM115  (the caller closes it)
    store, key = _open(path)
    if _whole_files(store):
        local = _copy(path)
        if local is None:
            raise FileNotFoundError(path)
        return open(local, "rb")  # noqa: SIM115
    info = info or stat(path)
    if info is None:
        raise FileNotFoundError(path)
    size = info.size if end is None else min(end, info.size)
    return io.BufferedReader(_RangeReader(path, store, key, size),  # type: ignore[return-value]
                             buffer_size=max(1, min(READ_CHUNK, size)))


def forget() -> None:
    """Drop this process's listings and copies of store inputs (each conversion lists afresh)."""
    _listing.cache_clear()
    _local_copy.cache_clear()


# ----------------------------------------------------------------------------- folders
def _folder_key(key: str) -> str:
    return key.rstrip("/") + "/" if key.strip("/") else ""


@functools.lru_cache(maxsize=256)
def _listing(url: str, pid: int) -> tuple[str, ...]:
    """Every key under a store folder, relative to it, sorted (one paginated listing per process)."""
    store, key = _open(url)
    prefix = _folder_key(key)
    with _store_errors(url):
        keys = store.list(prefix)
    return tuple(sorted(k[len(prefix):] for k in keys if k.startswith(prefix) and not k.endswith("/")))


def list_files(root: str) -> list[str]:
    """Every file under ``root`` (recursive), as sorted paths relative to it (``/``-separated)."""
    if not is_remote(root):
        found = []
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            found += [os.path.relpath(os.path.join(folder, name), root) for name in files]
        return sorted(found)
    return list(_listing(root.rstrip("/"), os.getpid()))


def is_dir(path: str) -> bool:
    """A local folder, or a store prefix holding at least one object (a bucket's root: the bucket exists)."""
    if not is_remote(path):
        return os.path.isdir(path)
    store, key = _open(path)
    with _store_errors(path):
        if not key.strip("/"):
            try:
                stores.check_access(path)
            except stores.StoreError:
                return False
            return True
        return bool(store.list(_folder_key(key), limit=1))


def is_file(path: str) -> bool:
    """Whether a file exists; on a store answered from one listing of its folder (many checks, few requests)."""
    if not is_remote(path):
        return os.path.isfile(path)
    folder, name = path.rstrip("/").rsplit("/", 1)
    if "://" not in folder or folder.endswith(":/"):
        return stat(path) is not None
    return name in _listing(folder, os.getpid())


def list_dir(root: str) -> tuple[list[str], list[str]]:
    """The sorted folders and files directly in ``root``."""
    if not is_remote(root):
        entries = sorted(os.listdir(root))
        folders = [e for e in entries if os.path.isdir(os.path.join(root, e))]
        return folders, [e for e in entries if os.path.isfile(os.path.join(root, e))]
    store, key = _open(root.rstrip("/"))
    with _store_errors(root):
        folders, files = store.list_top(_folder_key(key))  # s3/gs/azure: a delimiter listing, not every key
    return folders, sorted(f for f in files if not f.endswith("/"))


def first_file(folder: str) -> str | None:
    """The name of the first file (in sorted order) directly in ``folder``, without listing what is
    under it on a store (one request); None when that first entry is not a file directly in it."""
    if not is_remote(folder):
        with os.scandir(folder) as entries:
            return min((e.name for e in entries if e.is_file()), default=None)
    store, key = _open(folder.rstrip("/"))
    prefix = _folder_key(key)
    with _store_errors(folder):
        keys = store.list(prefix, limit=1)
    rel = keys[0][len(prefix):] if keys and keys[0].startswith(prefix) else ""
    return rel if rel and "/" not in rel else None


def expand(item: str) -> list[str]:
    """The files a file, folder (recursive) or glob names, in sorted order (empty: none)."""
    if not is_remote(item):
        if os.path.isdir(item):
            return sorted(os.path.join(root, f) for root, _, files in os.walk(item) for f in files)
        if any(c in item for c in GLOB_CHARS):
            return sorted(glob.glob(item))
        return [item] if os.path.isfile(item) else []
    if any(c in item for c in GLOB_CHARS):  # a glob of the folder holding its first wildcard
        folder = item[: min(item.find(c) for c in GLOB_CHARS if c in item)].rsplit("/", 1)[0]
        return [f"{folder}/{rel}" for rel in list_files(folder) if fnmatch.fnmatchcase(f"{folder}/{rel}", item)
                and rel.count("/") == item[len(folder) + 1:].count("/")]
    if stat(item) is not None:
        return [item]
    return [f"{item.rstrip('/')}/{rel}" for rel in list_files(item)]
