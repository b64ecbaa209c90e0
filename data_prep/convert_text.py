"""Plain-text or json-lines corpora (Wikipedia, BookCorpus style) -> text MDS.

    python data_prep/convert_text.py --inputs /data/wiki/*.jsonl --unit paragraph \\
        --max-chars 1000 --out s3://bucket/mds/wikibk

Files ending in ``.jsonl``/``.json`` hold one json document per line (text
under ``--text-key``); any other file is plain text. ``--unit`` picks a row:
``document`` (a whole text file / json line), ``paragraph`` (text between
blank lines) or ``line``. A unit longer than ``--max-chars`` is split on
sentence boundaries into pieces of at most that length (a single longer
sentence is split between words).

The plan is each file's byte ranges of about ``--range-size`` (default 64mb),
cut only where a unit ends (``line_ranges.py``): one resumable group per
range, whose worker reads only its range, so the driver holds a few numbers
per range whatever the corpus size. Reported lines (``file:line``) are
numbered as in the whole file.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from data_prep import inputs
from data_prep.cli import Converter, add_common_args, add_range_arg, add_split_arg, positive_int
from data_prep.line_ranges import CutRule, LineRange, plan_ranges
from data_prep.report import SkipLog
from data_prep.writer import SampleContext, SplitJob
from vlmo_composer.data.schema import TEXT

UNITS = ("document", "paragraph", "line")
RECORD_BYTES = 1 << 16
"""Consecutive lines are batched into records of about this many bytes (few, small records)."""

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class TextRangeRecord:
    """Whole lines ``[start, end)`` (bytes) of one file, starting at line ``first_line``."""

    record_id: str
    path: str
    start: int
    end: int
    first_line: int
    jsonl: bool


def split_sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text) if s]


def chunk_text(text: str, max_chars: int) -> list[str]:
    """Greedily pack whole sentences into pieces of at most ``max_chars`` characters.

    A sentence longer than a piece is packed word by word, and a word longer than
    a piece is cut.
    """
    if len(text) <= max_chars:
        return [text]
    units: list[str] = []
    for sentence in split_sentences(text):
        units += [sentence] if len(sentence) <= max_chars else _pack(_cut_words(sentence, max_chars), max_chars)
    return _pack(units, max_chars)


def _cut_words(sentence: str, max_chars: int) -> list[str]:
    words = []
    for word in sentence.split(" "):
        words += [word[i:i + max_chars] for i in range(0, max(len(word), 1), max_chars)]
    return words


def _pack(units: list[str], max_chars: int) -> list[str]:
    """Join consecutive units with spaces while the result fits in ``max_chars``."""
    pieces: list[str] = []
    current = ""
    for unit in units:
        if current and len(current) + 1 + len(unit) <= max_chars:
            current = f"{current} {unit}"
        else:
            if current:
                pieces.append(current)
            current = unit
    if current:
        pieces.append(current)
    return pieces


def split_units(text: str, unit: str) -> list[str]:
    if unit == "document":
        raw = [text]
    elif unit == "paragraph":
        raw = _BLANK_LINE.split(text)
    else:
        raw = text.split("\n")
    units = (_WHITESPACE.sub(" ", u).strip() for u in raw)
    return [u for u in units if u]


def _documents(record: TextRangeRecord, context: SampleContext, text_key: str) -> Iterator[str]:
    data = inputs.read_range(record.path, record.start, record.end)
    name = os.path.basename(record.path)
    if not record.jsonl:
        yield data.decode("utf-8", errors="replace")
        return
    for number, line in enumerate(data.split(b"\n"), start=record.first_line):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            context.skip("malformed_json_line", f"{name}:{number}")
            continue
        text = obj.get(text_key) if isinstance(obj, dict) else None
        if not isinstance(text, str):
            context.skip("non_text_document", f"{name}:{number}")
        elif not text.strip():
            context.skip("empty_document", f"{name}:{number}")
        else:
            yield text


def build_text_rows(record: TextRangeRecord, context: SampleContext, unit: str, max_chars: int,
                    text_key: str = "text") -> list[dict[str, str]]:
    return [{"text": piece}
            for document in _documents(record, context, text_key)
            for u in split_units(document, unit)
            for piece in chunk_text(u, max_chars)]


def expand_inputs(items: list[str]) -> list[str]:
    """The files of each file, folder or glob (local or on a store), in order."""
    paths: list[str] = []
    for item in items:
        found = inputs.expand(item)
        if not found:
            raise inputs.missing(item, f"no input files at {item}")
        paths += found
    return paths


def _cut_rule(unit: str, jsonl: bool) -> CutRule:
    """Where a range or record may end: after any line, except inside a paragraph of plain text,
    and never inside a plain text file read as one document."""
    if jsonl or unit == "line":
        return lambda line: True
    if unit == "paragraph":
        return lambda line: not line.strip()
    return lambda line: False


@dataclass(frozen=True)
class TextRangeSource:
    """One byte range of one input file: a group, whose worker cuts it into records."""

    name: str
    range: LineRange
    unit: str
    jsonl: bool

    @property
    def fingerprint(self) -> str:
        return self.range.fingerprint

    def plan(self, skipped: SkipLog) -> list[TextRangeRecord]:
        self.range.check_unchanged()
        name = os.path.basename(self.range.path)
        cut = _cut_rule(self.unit, self.jsonl)
        return [TextRangeRecord(f"{name}:{r.first_line}", r.path, r.start,
                                r.end, r.first_line, self.jsonl)
                for r in plan_ranges(self.range.path, RECORD_BYTES, cut, within=self.range) if r.end > r.start]


def plan_sources(paths: list[str], unit: str, range_bytes: int) -> list[TextRangeSource]:
    """The plan: each file's byte ranges (one pass counting lines, nothing kept but the ranges)."""
    sources = []
    for path in paths:
        jsonl = path.endswith((".jsonl", ".json"))
        for i, r in enumerate(plan_ranges(path, range_bytes, _cut_rule(unit, jsonl))):
            sources.append(TextRangeSource(f"{path}#{i}", r, unit, jsonl))
    return sources


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", nargs="+", required=True,
                        help="files, folders or globs (local or s3://, gs://, azure://: read in byte ranges)")
    parser.add_argument("--unit", choices=UNITS, default="paragraph")
    parser.add_argument("--max-chars", type=positive_int, default=1000,
                        help="split longer units on sentence boundaries (default 1000)")
    parser.add_argument("--text-key", default="text", help="json field holding the text (default text)")
    add_range_arg(parser, "64mb", "a group is at least this much text, up to the end of a line, paragraph or "
                  "text file per --unit")
    add_split_arg(parser)
    add_common_args(parser, image_args=False)
    return parser


def plan(args: argparse.Namespace) -> list[SplitJob]:
    build = functools.partial(build_text_rows, unit=args.unit, max_chars=args.max_chars, text_key=args.text_key)
    return [SplitJob(args.split, TEXT, [], build,
                     sources=plan_sources(expand_inputs(args.inputs), args.unit, args.range_size))]


CONVERTER = Converter("convert_text", build_parser, plan)
main = CONVERTER.main

if __name__ == "__main__":
    raise SystemExit(CONVERTER.cli())
