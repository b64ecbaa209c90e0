"""Captioned rows next to a folder of images a downloader already fetched.

Conceptual Captions (tsv) and SBU (json, txt) list captions with urls; the
images are fetched separately. A download belongs to a row only by its key,
the number in its file name: ``123.jpg``, or img2dataset's
``00000/000000123.jpg`` (its key is the 0-based data row with the default
10000 rows per shard). When the downloader kept the row's metadata next to
the image (img2dataset's ``<key>.json``), its url and caption must be the
row's, or the file is another row's image. A url's file name is never used:
many urls end in ``1.jpg``. Every row that gets no image is counted:
``missing_image``, ``download_failed`` (img2dataset's shard parquet says so,
with its message), ``url_mismatch``, ``caption_mismatch``, ``ambiguous_image``
(two files claim the row).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from typing import Any, Protocol

from data_prep import inputs
from data_prep.common import SkipRecord, clean_text, is_image_file, require_dir
from data_prep.image_text import image_text_sample
from data_prep.images import read_file_bytes
from data_prep.img2dataset_output import FailedRow, failed_rows_in_folder
from data_prep.report import SkipLog
from data_prep.writer import SampleContext, SplitJob
from vlmo_composer.data.schema import IMAGE_TEXT


@dataclass(frozen=True)
class CaptionedRow:
    """One line of a url list: its 0-based data row (header excluded), caption and url."""

    row: int
    caption: Any
    url: str


@dataclass(frozen=True)
class DownloadedRecord:
    record_id: str  # the row
    paths: tuple[str, ...]  # every image file named by this row (more than one: ambiguous)
    caption: Any
    url: str
    source: str
    failure: str = ""  # img2dataset's error message for this row


@dataclass(frozen=True)
class ShardFolders:
    """img2dataset's ``files`` layout: folder ``{shard:0Nd}`` holds the keys ``shard * per_shard + i``
    (img2dataset pads a key to the folder's width plus the digits of its rows per shard)."""

    names: tuple[str, ...]
    per_shard: int

    def shards(self, wanted: range) -> range:
        """The shard numbers whose folders can hold the rows in ``wanted``."""
        if not wanted:
            return range(0)
        low, high = sorted((wanted[0], wanted[-1]))
        return range(low // self.per_shard, high // self.per_shard + 1)


def shard_folders(root: str) -> ShardFolders | None:
    """``root``'s img2dataset layout, from its top-level names (not its files) and the first file of
    its first non-empty folder; None (list everything, as for a flat folder) when anything else is
    there: an image directly in it, a folder not named by digits of one width, a first key that is
    not its folder's."""
    folders, files = inputs.list_dir(root)
    if not folders or any(is_image_file(f) for f in files):
        return None
    width = len(folders[0])
    if not all(f.isdigit() and len(f) == width for f in folders):
        return None
    for folder in folders[:3]:  # a shard whose every row failed may have left an empty folder
        first = inputs.first_file(os.path.join(root, folder))
        if first is not None:
            break
    stem = os.path.splitext(first or "")[0]
    if not stem.isdigit() or len(stem) <= width:
        return None
    per_shard = 10 ** (len(stem) - width)
    return ShardFolders(tuple(folders), per_shard) if int(stem) // per_shard == int(folder) else None


def _files_for(root: str, shards: range | None, layout: ShardFolders | None) -> list[str]:
    """The files under ``root`` a group's rows can name: the needed shard folders' only, or all."""
    if layout is None or shards is None:
        return inputs.list_files(root)
    return [f"{name}/{rel}" for name in layout.names if int(name) in shards
            for rel in inputs.list_files(os.path.join(root, name))]


def index_downloads(root: str, wanted: range | None = None,
                    layout: ShardFolders | None = None) -> dict[int, list[str]]:
    """Image files named by a row number (``123.jpg``, ``00000/000000123.jpg``), by row; only the
    rows in ``wanted`` (a group's), so a worker holds its group's files, not the folder's. With
    img2dataset's ``layout``, only the shard folders that can hold ``wanted`` are listed."""
    require_dir(root, "image folder")
    by_row: dict[int, list[str]] = {}
    shards = layout.shards(wanted) if layout is not None and wanted is not None else None
    for rel in _files_for(root, shards, layout):
        stem = os.path.splitext(os.path.basename(rel))[0]
        if is_image_file(rel) and stem.isdigit() and (wanted is None or int(stem) in wanted):
            by_row.setdefault(int(stem), []).append(rel)
    return {row: [os.path.join(root, rel) for rel in sorted(rels)] for row, rels in by_row.items()}


def _failure(row: CaptionedRow, failed: dict[int, FailedRow]) -> str:
    entry = failed.get(row.row)
    return entry.message if entry is not None and entry.url in (None, row.url) else ""


def match_rows(rows: list[CaptionedRow], images: str, source: str,
               wanted: range | None = None) -> list[DownloadedRecord]:
    """One record per row, with the files its key names and img2dataset's failure if any
    (``wanted``: the rows' span, to index only those downloads)."""
    layout = shard_folders(images) if wanted is not None else None
    downloads = index_downloads(images, wanted, layout)
    shards = layout.shards(wanted) if layout is not None and wanted is not None else None
    failed = {k: v for k, v in failed_rows_in_folder(images, shards).items() if wanted is None or k in wanted}
    return [DownloadedRecord(str(r.row), tuple(downloads.get(r.row, ())), r.caption, r.url, source,
                             _failure(r, failed)) for r in rows]


def _read_meta(image_path: str) -> dict[str, Any] | None:
    path = os.path.splitext(image_path)[0] + ".json"
    try:
        data = inputs.read_bytes(path)
        if data is None:
            return None
        meta = json.loads(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise SkipRecord("malformed_json", os.path.basename(path)) from None
    if not isinstance(meta, dict):
        raise SkipRecord("malformed_json", os.path.basename(path))
    return meta


def confirm_download(record: DownloadedRecord) -> str:
    """The one file that is this row's download, or :class:`SkipRecord` saying why none is."""
    if len(record.paths) > 1:
        raise SkipRecord("ambiguous_image", "several files for this row: " + ", ".join(
            os.path.basename(p) for p in record.paths))
    if not record.paths:
        if record.failure:
            raise SkipRecord("download_failed", record.failure, count_detail=True)
        raise SkipRecord("missing_image", "no file named by this row")
    path = record.paths[0]
    meta = _read_meta(path)
    if meta is not None:
        url = meta.get("url")
        if isinstance(url, str) and url.strip() != record.url.strip():
            raise SkipRecord("url_mismatch", f"{os.path.basename(path)} was downloaded from {url}")
        caption = meta.get("caption")
        if isinstance(caption, str) and clean_text(caption) != clean_text(record.caption):
            raise SkipRecord("caption_mismatch", f"{os.path.basename(path)} has caption {caption[:60]!r}")
    return path


def build_downloaded_row(record: DownloadedRecord, context: SampleContext,
                         max_image_side: int | None = None) -> dict[str, Any]:
    data = read_file_bytes(confirm_download(record))
    return image_text_sample(record.record_id, data, [record.caption], record.source, context, max_image_side)


class RowReader(Protocol):
    """A group's share of a url list: its rows (what it cannot read counted in ``skipped``) and
    the span of row numbers they lie in."""

    @property
    def fingerprint(self) -> str: ...

    def read(self, skipped: SkipLog) -> tuple[list[CaptionedRow], range]: ...


@dataclass(frozen=True)
class DownloadedSource:
    """One group of a url list next to a folder of downloads: planned by the worker that writes it."""

    name: str
    rows: RowReader
    images: str
    source: str

    @property
    def fingerprint(self) -> str:
        return self.rows.fingerprint

    def plan(self, skipped: SkipLog) -> list[DownloadedRecord]:
        rows, span = self.rows.read(skipped)
        return match_rows(rows, self.images, self.source, span)


def downloaded_job(readers: list[tuple[str, RowReader]], images: str, source: str, split: str,
                   max_image_side: int | None) -> SplitJob:
    """The image-text job for a url list, one group per (name, reader), next to a folder of downloads."""
    require_dir(images, "image folder")
    build = functools.partial(build_downloaded_row, max_image_side=max_image_side)
    return SplitJob(split, IMAGE_TEXT, [], build,
                    sources=[DownloadedSource(name, reader, images, source) for name, reader in readers])
