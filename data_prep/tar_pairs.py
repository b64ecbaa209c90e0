"""Image-text pairs from img2dataset's webdataset tars (``{key}.jpg/.txt/.json``).

The plan is one group per tar, made from file names, sizes and mtimes only:
each worker indexes its own tar (member offsets, no data) and reads each image
straight from its offset, so the driver's memory and time to the first shard do
not grow with the number of pairs (issue 17).
Samples whose json ``status`` is not ``success`` are skipped and counted, and
so are the rows img2dataset lists as failed in each shard's ``.parquet``
(``_stats.json`` when pyarrow is not installed), with its error messages.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import json
import os
import tarfile
from dataclasses import dataclass
from typing import Any

from data_prep.common import ConversionError, SkipRecord
from data_prep.image_text import image_text_sample
from data_prep.img2dataset_output import count_shard_failures
from data_prep.report import SkipLog
from data_prep.writer import SampleContext, SplitJob
from vlmo_composer.data.schema import IMAGE_TEXT

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


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
        elif any(c in item for c in "*?["):
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


def index_tar(path: str, source: str, skipped: SkipLog) -> list[TarPairRecord]:
    """One record per key, in tar order; a truncated tar keeps what precedes the damage."""
    members: dict[str, list[tuple[str, int, int]]] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                if info.isfile():
                    key, ext = _split_name(info.name)
                    members.setdefault(key, []).append((ext, info.offset_data, info.size))
    except tarfile.ReadError as e:
        if not members:
            raise ConversionError(f"cannot read tar {path} (only uncompressed tars are supported): {e}") from None
        skipped.add("truncated_tar", f"{os.path.basename(path)} ({e})")
    except (EOFError, OSError) as e:
        skipped.add("truncated_tar", f"{os.path.basename(path)} ({e})")
    tar_name = os.path.splitext(os.path.basename(path))[0]
    return [TarPairRecord(f"{tar_name}/{key}", path, tuple(m), source) for key, m in members.items()]


@dataclass(frozen=True)
class TarSource:
    """One input tar, planned by the worker that writes its group."""

    name: str
    source: str
    fingerprint: str
    """Size and mtime of the tar and of its img2dataset sidecars: a change redoes its group."""

    def plan(self, skipped: SkipLog) -> list[TarPairRecord]:
        records = index_tar(self.name, self.source, skipped)
        count_shard_failures(os.path.splitext(self.name)[0], skipped)
        return records


def _fingerprint(path: str) -> str:
    parts = []
    for p in (path, *(os.path.splitext(path)[0] + s for s in (".parquet", "_stats.json"))):
        with contextlib.suppress(OSError):
            st = os.stat(p)
            parts.append(f"{os.path.basename(p)}:{st.st_size}:{st.st_mtime_ns}")
    return ";".join(parts)


def tar_sources(inputs: list[str], source: str) -> list[TarSource]:
    """The plan: one source per tar, from a directory listing and a stat, no tar contents."""
    return [TarSource(path, source, _fingerprint(path)) for path in expand_tar_inputs(inputs)]


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
