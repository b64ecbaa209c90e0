"""Where a loader's data came from: each stream's ``conversion_report.json`` summarised.

``data_prep`` writes ``conversion_report.json`` next to every split's ``index.json``
(``data_prep/report.py``: ``split``, ``schema``, ``location``, ``records``,
``samples_written``, ``skipped`` / ``dropped`` as ``{reason: {count, first_ids}}``).
A summary keeps what a results table needs to be traced to its data: the stream, where
it was read, the split and schema, records read, samples written and the counts left
out by reason. A report is read where the data is local, or on ``s3://`` when the
object can be fetched; otherwise the summary says it is unknown (``report: null``).
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional

from vlmo_composer import stores

REPORT_NAME = "conversion_report.json"


def dataset_locations(dataset: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(stream name, location)`` per stream of a loader's ``dataset`` section (``streams:`` or one
    ``remote``/``local``); the location is the remote when there is one (where the data was written)."""
    streams = dataset.get("streams")
    if streams:
        items = streams.items() if isinstance(streams, Mapping) else \
            [(s.get("name", f"streams[{i}]"), s) for i, s in enumerate(streams)]
        entries = [(str(name), cfg) for name, cfg in items if cfg is not None]
    else:
        entries = [("dataset", dataset)]
    out = []
    for name, cfg in entries:
        where = str(cfg.get("remote") or cfg.get("local") or "")
        split = cfg.get("split")
        out.append((name, f"{where.rstrip('/')}/{split}" if split else where))
    return out


def read_report(location: str) -> Optional[dict[str, Any]]:
    """The ``conversion_report.json`` next to ``location``'s ``index.json``, or None when there is none
    (or it cannot be read: data written by other tools, an object store without credentials)."""
    try:
        if stores.is_remote(location):
            store, key = stores.open_store(f"{location.rstrip('/')}/{REPORT_NAME}")
            data = store.read_bytes(key)
            return None if data is None else json.loads(data)
        if stores.has_scheme(location):
            return None
        path = os.path.join(os.path.expanduser(location), REPORT_NAME)
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except Exception:  # absent or unreadable: provenance unknown, never a failed run
        return None


def summarise_report(report: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a conversion report that trace a number to its data (counts by reason, no ids)."""
    def counts(log: Any) -> dict[str, int]:
        return {reason: int(entry.get("count", 0)) for reason, entry in (log or {}).items()}

    return {
        "split": report.get("split"),
        "schema": report.get("schema"),
        "written_to": report.get("location"),
        "records": report.get("records"),
        "samples_written": report.get("samples_written"),
        "skipped": counts(report.get("skipped")),
        "dropped": counts(report.get("dropped")),
    }


def data_provenance(dataset: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per stream: ``{stream, location, report}`` (``report`` a :func:`summarise_report`, or None: unknown)."""
    out = []
    for name, location in dataset_locations(dataset):
        report = read_report(location) if location else None
        out.append({"stream": name, "location": location,
                    "report": summarise_report(report) if report is not None else None})
    return out
