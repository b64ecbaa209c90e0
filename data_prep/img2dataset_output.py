"""What img2dataset recorded about the rows it could not download.

img2dataset writes only successful downloads into a shard (``00000.tar`` or
the ``00000/`` folder); every row, failures included, goes to
``00000.parquet`` (``key``, ``url``, ``caption``, ``status``,
``error_message``, ...) and the shard's totals to ``00000_stats.json``
(``count``, ``successes``, ``failed_to_download``, ``failed_to_resize``,
``status_dict``: message -> count). Reading them is how a report can say how
many pairs of the url list were lost and why. The parquet needs ``pyarrow``
(installed with img2dataset); without it the totals come from
``_stats.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from data_prep import inputs
from data_prep.common import ConversionError
from data_prep.report import SkipLog

STATUS_REASONS = {"failed_to_download": "download_failed", "failed_to_resize": "resize_failed"}
"""img2dataset's status of a failed row -> the report's reason."""


@dataclass(frozen=True)
class FailedRow:
    key: str
    reason: str
    message: str
    url: str | None


def _read_parquet_rows(path: str) -> list[dict[str, Any]] | None:
    try:
        import pyarrow.parquet as pq  # optional: comes with img2dataset
    except ImportError:
        return None
    try:
        if inputs.is_remote(path):
            import pyarrow as pa

            table = pq.read_table(pa.BufferReader(inputs.read_bytes(path) or b""), columns=None)
        else:
            table = pq.read_table(path, columns=None)
    except Exception as e:  # pyarrow raises several types for damaged files
        raise ConversionError(f"cannot read img2dataset parquet {path}: {e}") from None
    return table.to_pylist()


def failed_rows(shard_base: str) -> list[FailedRow] | None:
    """The failed rows of shard ``<shard_base>.parquet``; None when it cannot be read here."""
    path = shard_base + ".parquet"
    return _parquet_failures(path) if inputs.is_file(path) else None


def _parquet_failures(path: str) -> list[FailedRow] | None:
    """The failed rows of an existing shard parquet; None when pyarrow is not installed."""
    rows = _read_parquet_rows(path)
    if rows is None:
        return None
    failed = []
    for row in rows:
        status = row.get("status")
        if status == "success":
            continue
        reason = STATUS_REASONS.get(str(status), "download_failed")
        message = row.get("error_message") or str(status)
        url = row.get("url")
        failed.append(FailedRow(str(row.get("key")), reason, str(message), url if isinstance(url, str) else None))
    return failed


def _stats_failures(shard_base: str, skipped: SkipLog) -> bool:
    """Count a shard's failures from its ``_stats.json`` totals (no per-row keys there)."""
    path = shard_base + "_stats.json"
    if not os.path.isfile(path):
        return False
    try:
        with open(path, encoding="utf-8") as f:
            stats = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ConversionError(f"cannot read img2dataset stats {path}: {e}") from None
    messages = {m: int(n) for m, n in (stats.get("status_dict") or {}).items() if m != "success"}
    name = os.path.basename(shard_base)
    totals = {r: int(stats.get(s) or 0) for s, r in STATUS_REASONS.items()}
    for reason, count in totals.items():
        if count:
            skipped.add(reason, f"{name} ({count} rows, from _stats.json)", count=count)
    only = [r for r, n in totals.items() if n]
    if len(only) == 1:  # the messages can be attributed only when one kind of failure occurred
        for message, n in messages.items():
            skipped.reasons[only[0]].count_detail(message, n)
    return True


def count_shard_failures(shard_base: str, skipped: SkipLog) -> None:
    """Add the failed rows of one webdataset shard to ``skipped`` (ids ``<shard>/<key>``)."""
    rows = failed_rows(shard_base)
    if rows is None:
        _stats_failures(shard_base, skipped)
        return
    name = os.path.basename(shard_base)
    for row in rows:
        skipped.add(row.reason, f"{name}/{row.key} ({row.message[:120]})", detail=row.message)


def _wanted_parquet(name: str, shards: range | None) -> bool:
    """A shard parquet to read: every one, or those named by a number in ``shards`` (and any other)."""
    stem = name[: -len(".parquet")]
    return name.endswith(".parquet") and (shards is None or not stem.isdigit() or int(stem) in shards)


def failed_rows_in_folder(root: str, shards: range | None = None) -> dict[int, FailedRow]:
    """Failed rows of every shard parquet directly in ``root`` (``files`` output), by key; only
    ``<shard>.parquet`` of the shard numbers in ``shards`` when given (a group's)."""
    found: dict[int, FailedRow] = {}
    for name in inputs.list_dir(root)[1]:
        if _wanted_parquet(name, shards):
            for row in _parquet_failures(os.path.join(root, name)) or []:
                if row.key.isdigit():
                    found[int(row.key)] = row
    return found
