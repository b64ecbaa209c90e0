"""What a conversion wrote and what it left out, by reason.

Nothing a converter drops may vanish silently: every skipped record and every
dropped caption is counted here under a reason, with the first few offending
ids, and ends up in ``conversion_report.json`` and the printed summary.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_EXAMPLE_IDS = 5
"""How many offending ids the report keeps per reason."""

MAX_DETAILS = 50
"""How many distinct messages (e.g. img2dataset's download errors) a reason counts; the rest are "other"."""


@dataclass
class ReasonCount:
    count: int = 0
    first_ids: list[str] = field(default_factory=list)
    details: dict[str, int] = field(default_factory=dict)
    """Counts by message, for reasons whose causes vary (``download_failed``: "HTTP Error 404: ...")."""

    def count_detail(self, detail: str, count: int) -> None:
        key = detail if detail in self.details or len(self.details) < MAX_DETAILS else "other"
        self.details[key] = self.details.get(key, 0) + count

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"count": self.count, "first_ids": list(self.first_ids)}
        if self.details:
            obj["details"] = dict(sorted(self.details.items(), key=lambda kv: (-kv[1], kv[0])))
        return obj


@dataclass
class SkipLog:
    """Counts by reason plus the first few ids, mergeable in a fixed order."""

    reasons: dict[str, ReasonCount] = field(default_factory=dict)

    def add(self, reason: str, item_id: Any, count: int = 1, detail: str | None = None) -> None:
        """Count ``count`` items under ``reason``; ``detail`` (a message) is counted too."""
        entry = self.reasons.setdefault(reason, ReasonCount())
        entry.count += count
        if len(entry.first_ids) < MAX_EXAMPLE_IDS:
            entry.first_ids.append(str(item_id))
        if detail is not None:
            entry.count_detail(detail, count)

    def merge(self, other: SkipLog) -> None:
        for reason, theirs in other.reasons.items():
            mine = self.reasons.setdefault(reason, ReasonCount())
            mine.count += theirs.count
            room = MAX_EXAMPLE_IDS - len(mine.first_ids)
            mine.first_ids.extend(theirs.first_ids[: max(room, 0)])
            for detail, n in theirs.details.items():
                mine.count_detail(detail, n)

    @property
    def total(self) -> int:
        return sum(r.count for r in self.reasons.values())

    def count(self, reason: str) -> int:
        entry = self.reasons.get(reason)
        return entry.count if entry else 0

    def to_json(self) -> dict[str, Any]:
        return {k: v.to_json() for k, v in sorted(self.reasons.items())}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> SkipLog:
        return cls({k: ReasonCount(int(v["count"]), list(v["first_ids"]), dict(v.get("details", {})))
                    for k, v in obj.items()})


@dataclass
class SplitReport:
    """The outcome of converting one split (one MDS dataset).

    ``skipped`` counts input records that produced no sample; ``dropped``
    counts parts of kept records that were left out (an empty caption of an
    image that has others, a question whose answers are not in the vocabulary).
    """

    split: str
    schema: str
    location: str
    records: int = 0
    samples_written: int = 0
    skipped: SkipLog = field(default_factory=SkipLog)
    dropped: SkipLog = field(default_factory=SkipLog)
    groups: int = 0
    groups_resumed: int = 0
    elapsed_s: float = 0.0
    already_complete: bool = False

    def to_json(self) -> dict[str, Any]:
        obj = asdict(self)
        obj["skipped"] = self.skipped.to_json()
        obj["dropped"] = self.dropped.to_json()
        obj.pop("already_complete")
        return obj

    def to_json_text(self) -> str:
        return json.dumps(self.to_json(), indent=1, ensure_ascii=False)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> SplitReport:
        fields = {k: v for k, v in obj.items() if k in cls.__dataclass_fields__}
        fields["skipped"] = SkipLog.from_json(obj.get("skipped", {}))
        fields["dropped"] = SkipLog.from_json(obj.get("dropped", {}))
        return cls(**fields)


def format_summary(reports: list[SplitReport], elapsed_s: float) -> str:
    """A plain-text table of every split, then the reasons with example ids."""
    header = ("split", "schema", "records", "written", "skipped", "dropped", "status")
    rows = []
    for r in reports:
        status = "already complete" if r.already_complete else (
            f"resumed {r.groups_resumed}/{r.groups} groups" if r.groups_resumed else "done"
        )
        rows.append((r.split or "-", r.schema, str(r.records), str(r.samples_written),
                     str(r.skipped.total), str(r.dropped.total), status))
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    for r in reports:
        for kind, log in (("skipped", r.skipped), ("dropped", r.dropped)):
            for reason, entry in sorted(log.reasons.items()):
                ids = ", ".join(entry.first_ids)
                lines.append(f"  {r.split or '-'}: {kind} {entry.count} x {reason} (first: {ids})")
                lines += [f"      {n} x {detail}" for detail, n in entry.to_json().get("details", {}).items()]
    for r in reports:
        lines.append(f"  {r.split or '-'} -> {r.location}")
        if r.samples_written == 0:
            lines.append(f"  WARNING: {r.split or '-'} wrote no samples")
    lines.append(f"elapsed {elapsed_s:.1f} s")
    return "\n".join(lines)
