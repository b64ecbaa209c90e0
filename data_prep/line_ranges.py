"""Byte ranges of a line-based input (text, json lines, a tsv), planned without holding its lines.

A file is cut into ranges of at least ``range_bytes`` bytes; a cut falls at the
end of a line (and, where a unit spans lines, at the next line end allowed to
end one), so every line belongs to exactly one range: the one it starts in.
The driver's one pass over a file counts lines and data rows while it looks for
the cuts, and hashes each range's bytes (constant memory, one small entry per
range); each range carries the number of its first line and of its first data
row, so the worker that reads only its range numbers lines and rows exactly as
a reader of the whole file would. A group's change detection is its range's
place, first line and row numbers and hash: an edit redoes the groups whose
lines it changes or renumbers. Lines end at ``\\n`` (a ``\\r`` before it is
part of the line ending).

A file on a store is read the same way through ``inputs.py``: the planning pass
streams it once in ranged GETs of a few MB (nothing is kept: line and row
numbers need every line counted, as locally), and each worker reads only its
range, with ranged GETs; a range's file version is the store's size and etag.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from data_prep import inputs
from data_prep.common import ConversionError

CutRule = Callable[[bytes], bool]
"""May a range end after this line (e.g. text paragraphs: only after a blank line)?"""


@dataclass(frozen=True)
class LineRange:
    """Bytes ``[start, end)`` of ``path``: whole lines, the first numbered ``first_line`` (from 1).

    ``first_row`` data rows (non-blank lines after ``header_lines``) precede it; ``rows`` are in it.
    """

    path: str
    start: int
    end: int
    first_line: int
    first_row: int
    rows: int
    file_size: int
    file_version: str
    """The file's mtime (a store: its etag) when planned."""
    digest: str = ""
    """A hash of the range's bytes, taken in the planning pass."""

    @property
    def fingerprint(self) -> str:
        """What changes when the range's lines or their numbers do: an edit redoes only the groups
        whose lines it changes or renumbers."""
        return (f"{os.path.basename(self.path)}:{self.start}-{self.end}:line{self.first_line}:row{self.first_row}:"
                f"{self.digest}")

    def check_unchanged(self) -> None:
        """Refuse to read a range of a file that changed since it was planned."""
        info = inputs.stat(self.path)
        if info is None:
            raise inputs.missing(self.path, f"cannot read {self.path}: it is gone")
        if (info.size, info.version) != (self.file_size, self.file_version):
            raise ConversionError(f"{self.path} changed while it was being converted; run the same command "
                                  "again to convert it as it is now")


def _any_line(line: bytes) -> bool:
    return True


def plan_ranges(path: str, range_bytes: int, cut_after: CutRule = _any_line, header_lines: int = 0,
                within: LineRange | None = None) -> list[LineRange]:
    """The ranges of ``path`` (or of the range ``within`` it), in file order; an empty file
    gives one empty range, so it still has its group."""
    info = inputs.stat(path)
    if info is None:
        raise inputs.missing(path, f"cannot read {path}: no such file")
    try:
        f = inputs.open_binary(path, info, end=within.end if within else None)
    except OSError as e:
        raise ConversionError(f"cannot read {path}: {e}") from None
    outer = within or LineRange(path, 0, info.size, 1, 0, 0, info.size, info.version)
    ranges: list[LineRange] = []
    start, first_line, first_row, rows = outer.start, outer.first_line, outer.first_row, 0
    offset, number, digest = outer.start, outer.first_line - 1, hashlib.blake2b(digest_size=12)

    def close() -> None:
        ranges.append(LineRange(path, start, offset, first_line, first_row, rows, outer.file_size,
                                outer.file_version, digest.hexdigest()))

    with f:
        f.seek(outer.start)
        try:
            for line in _lines(f, outer.end - outer.start):
                offset += len(line)
                number += 1
                digest.update(line)
                if number > header_lines and line.rstrip(b"\r\n"):
                    rows += 1
                if offset - start >= range_bytes and cut_after(line):
                    close()
                    start, first_line, first_row, rows = offset, number + 1, first_row + rows, 0
                    digest = hashlib.blake2b(digest_size=12)
        except OSError as e:
            raise ConversionError(f"cannot read {path}: {e}") from None
    if offset > start or not ranges:
        close()
    return ranges


def _lines(f, size: int) -> Iterator[bytes]:  # noqa: ANN001  (a binary file)
    """The lines of the next ``size`` bytes of ``f``."""
    while size > 0:
        line = f.readline(size)
        if not line:
            return
        size -= len(line)
        yield line


def read_range(r: LineRange) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of each line of ``r``, line ending included."""
    r.check_unchanged()
    try:
        with inputs.open_binary(r.path, end=r.end) as f:
            f.seek(r.start)
            yield from enumerate(_lines(f, r.end - r.start), start=r.first_line)
    except OSError as e:
        raise ConversionError(f"cannot read {r.path}: {e}") from None


def parse_size(text: str) -> int:
    """``64mb``, ``512kb``, ``1gb``, ``4096`` -> bytes (the units of ``--shard-size``)."""
    units = {"kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "b": 1}
    lowered = text.strip().lower()
    for suffix, factor in units.items():
        if lowered.endswith(suffix) and lowered[: -len(suffix)].strip().isdigit():
            return int(lowered[: -len(suffix)]) * factor
    if lowered.isdigit():
        return int(lowered)
    raise ValueError(f"not a size: {text!r} (e.g. 64mb, 512kb, 4096)")
