"""Image-text pairs from img2dataset's webdataset tars (``{key}.jpg/.txt/.json``).

The plan is one group per tar, made from file names, sizes and mtimes only:
each worker indexes its own tar (member offsets, no data) and reads each image
straight from its offset, so the driver's memory and time to the first shard do
not grow with the number of pairs (issue 17).
Samples whose json ``status`` is not ``success`` are skipped and counted, and
so are the rows img2dataset lists as failed in each shard's ``.parquet``
(``_stats.json`` when pyarrow is not installed), with its error messages.

Tars on an object store (``s3://``, ``gs://``, ``azure://``: a folder, one tar
or a glob) are planned from one paginated listing (names, sizes, etags); each
worker downloads its own tar and sidecars to a local temporary file, indexes
and reads it like a local one, and removes it when its group ends (written or failed).
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import glob
import hashlib
import json
import os
import shutil
import tarfile
from dataclasses import dataclass
from typing import Any

from data_prep.inputs import GLOB_CHARS, process_temp_folder
from data_prep.common import ConversionError, SkipRecord
from data_prep.image_text import image_text_sample
from data_prep.img2dataset_output import count_shard_failures
from data_prep.report import SkipLog
from data_prep.writer import SampleContext, SplitJob
from vlmo_composer import stores
from vlmo_composer.data.schema import IMAGE_TEXT

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
SIDECARS = (".parquet", "_stats.json")
"""What img2dataset writes next to each ``<shard>.tar`` (every row's status; the shard's totals)."""


@dataclass(frozen=True)
class TarPairRecord:
    record_id: str
    tar_path: str
    members: tuple[tuple[str, int, int], ...]  # (extension, data offset, size)
    source: str


def expand_tar_inputs(inputs: list[str]) -> list[str]:
    """Tar paths from files, folders (every ``*.tar`` inside) and globs, in sorted order."""
    paths: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(glob.glob(os.path.join(item, "*.tar")))
        elif any(c in item for c in GLOB_CHARS):
            found = sorted(glob.glob(item))
        else:
            found = [item]
        if not found:
            raise ConversionError(f"no tar files match {item}")
        for path in found:
            if not os.path.isfile(path):
                raise ConversionError(f"tar file not found: {path}")
        paths += found
    return paths


def _split_name(name: str) -> tuple[str, str]:
    folder, base = os.path.split(name)
    stem, _, ext = base.partition(".")
    return os.path.join(folder, stem), ext.lower()


def index_tar(path: str, source: str, skipped: SkipLog, name: str | None = None) -> list[TarPairRecord]:
    """One record per key, in tar order; a truncated tar keeps what precedes the damage. ``name`` is how
    errors name the tar (a store tar's URL, not its temporary local copy)."""
    members: dict[str, list[tuple[str, int, int]]] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                if info.isfile():
                    key, ext = _split_name(info.name)
                    members.setdefault(key, []).append((ext, info.offset_data, info.size))
    except tarfile.ReadError as e:
        if not members:
            raise ConversionError(f"cannot read tar {name or path} (only uncompressed tars are supported): "
                                  f"{e}") from None
        skipped.add("truncated_tar", f"{os.path.basename(path)} ({e})")
    except (EOFError, OSError) as e:
        skipped.add("truncated_tar", f"{os.path.basename(path)} ({e})")
    tar_name = os.path.splitext(os.path.basename(path))[0]
    return [TarPairRecord(f"{tar_name}/{key}", path, tuple(m), source) for key, m in members.items()]


def add_tars_argument(parser: Any, required: bool = False) -> None:
    """``--tars`` of every converter that reads img2dataset tars (one place for what it accepts)."""
    parser.add_argument("--tars", nargs="+", required=required,
                        help="img2dataset webdataset tars (files, folders, globs; local or on any store: "
                             "s3://, gs://, azure://, oci://, hf://datasets/, dbfs:/Volumes/)")


@dataclass(frozen=True)
class TarSource:
    """One input tar (a local path or a store URL), planned by the worker that writes its group."""

    name: str
    source: str
    fingerprint: str
    """Size and mtime (etag on a store) of the tar and of its img2dataset sidecars: a change redoes its group."""
    sidecars: tuple[str, ...] = ()
    """A store tar's sidecar URLs, as listed when planning."""

    def _local_copy(self) -> str:
        return os.path.join(process_temp_folder("tars"), hashlib.sha1(self.name.encode()).hexdigest()[:16],
                            os.path.basename(self.name))

    def _download(self) -> str:
        local = self._local_copy()
        os.makedirs(os.path.dirname(local), exist_ok=True)
        for url in (self.name, *self.sidecars):
            store, key = stores.open_store(url)
            with stores.named_errors(url):
                store.download_file(key, os.path.join(os.path.dirname(local), os.path.basename(key)))
        return local

    def plan(self, skipped: SkipLog) -> list[TarPairRecord]:
        path = self._download() if stores.is_remote(self.name) else self.name
        records = index_tar(path, self.source, skipped, self.name)
        count_shard_failures(os.path.splitext(path)[0], skipped)
        return records

    def release(self) -> None:
        """Remove the local copy of a store tar once its group ends, written or failed (the writer calls this)."""
        if stores.is_remote(self.name):
            shutil.rmtree(os.path.dirname(self._local_copy()), ignore_errors=True)


def _fingerprint(path: str) -> str:
    parts = []
    for p in (path, *(os.path.splitext(path)[0] + s for s in SIDECARS)):
        with contextlib.suppress(OSError):
            st = os.stat(p)
            parts.append(f"{os.path.basename(p)}:{st.st_size}:{st.st_mtime_ns}")
    return ";".join(parts)


def _store_tars(url: str, source: str) -> list[TarSource]:
    """The tars of a store folder, tar or glob, from one paginated listing (no object is read)."""
    try:
        store, key = stores.open_store(url)
    except ValueError as e:
        raise ConversionError(str(e)) from None
    pattern = key if any(c in key for c in GLOB_CHARS) else None
    prefix = key.split("*")[0].split("?")[0].split("[")[0] if pattern else key
    try:
        with stores.named_errors(url):
            listed = {o.key: o for o in store.list_info(prefix)}
    except (stores.StoreError, ValueError) as e:  # ValueError: a store whose library lists no sizes
        raise ConversionError(str(e)) from None
    if pattern:
        tars = sorted(k for k in listed if k.endswith(".tar") and fnmatch.fnmatchcase(k, pattern)
                      and k.count("/") == pattern.count("/"))
    elif key in listed:
        tars = [key]
    else:
        folder = key.rstrip("/") + "/" if key else ""
        tars = sorted(k for k in listed if k.startswith(folder) and k.endswith(".tar") and "/" not in k[len(folder):])
    if not tars:
        raise ConversionError(f"no tar files match {url}")
    found = []
    for tar in tars:
        objects = [listed[k] for k in (tar, *(tar[: -len(".tar")] + s for s in SIDECARS)) if k in listed]
        fingerprint = ";".join(f"{os.path.basename(o.key)}:{o.size}:{o.version}" for o in objects)
        found.append(TarSource(store.url(tar), source, fingerprint, tuple(store.url(o.key) for o in objects[1:])))
    return found


def tar_sources(inputs: list[str], source: str) -> list[TarSource]:
    """The plan: one source per tar, from a directory (or store) listing and a stat, no tar contents."""
    found: list[TarSource] = []
    for item in inputs:
        if stores.is_remote(item):
            found += _store_tars(item, source)
        else:
            found += [TarSource(path, source, _fingerprint(path)) for path in expand_tar_inputs([item])]
    return found


def plan_tar_pairs(inputs: list[str], source: str) -> tuple[list[TarPairRecord], SkipLog]:
    """The tars' samples, and the rows img2dataset could not download (from each shard's
    ``.parquet`` / ``_stats.json``: failures never reach the tar)."""
    skipped = SkipLog()
    records: list[TarPairRecord] = []
    for path in expand_tar_inputs(inputs):
        records += index_tar(path, source, skipped)
        count_shard_failures(os.path.splitext(path)[0], skipped)
    return records, skipped


def _read(record: TarPairRecord, ext: str) -> bytes | None:
    for member_ext, offset, size in record.members:
        if member_ext == ext:
            with open(record.tar_path, "rb") as f:
                f.seek(offset)
                data = f.read(size)
            if len(data) != size:
                raise SkipRecord("truncated_member", f".{ext} cut short in tar")
            return data
    return None


def _caption(record: TarPairRecord, meta: dict[str, Any]) -> Any:
    data = _read(record, "txt")
    if data is None:
        return meta.get("caption")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return b""  # not text: reported as a non-text caption


def build_tar_pair(record: TarPairRecord, context: SampleContext,
                   max_image_side: int | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    raw_meta = _read(record, "json")
    if raw_meta is not None:
        try:
            meta = json.loads(raw_meta)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SkipRecord("malformed_json") from None
        if not isinstance(meta, dict):
            raise SkipRecord("malformed_json")
        status = meta.get("status", "success")
        if status != "success":
            raise SkipRecord("download_failed", str(meta.get("error_message") or status), count_detail=True)
    image = next((d for d in (_read(record, e) for e in IMAGE_EXTS) if d is not None), None)
    if image is None:
        raise SkipRecord("missing_image")
    caption = _caption(record, meta)
    if caption is None:
        raise SkipRecord("missing_caption")
    return image_text_sample(record.record_id, image, [caption], record.source, context, max_image_side)


def tar_pairs_job(inputs: list[str], source: str, split: str, max_image_side: int | None) -> SplitJob:
    """The image-text job for a set of img2dataset tars."""
    build = functools.partial(build_tar_pair, max_image_side=max_image_side)
    return SplitJob(split, IMAGE_TEXT, [], build, sources=tar_sources(inputs, source))
