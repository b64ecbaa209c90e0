"""Helpers every converter shares: errors, annotation reading, caption cleaning.

Two kinds of bad input, treated differently on purpose:

* a bad *record* (corrupt image, empty caption, malformed json line, missing
  image file) raises :class:`SkipRecord`; the writer counts it by reason and
  the conversion goes on;
* a missing or unreadable *input* (an annotation file, an image root) raises
  :class:`ConversionError`, which stops the script with a message naming it.

Inputs are read through ``inputs.py``: a local path or a store URL alike.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterator
from typing import Any, Protocol

from data_prep import inputs
from data_prep.errors import ConversionError, SkipRecord  # converters import them from here
from data_prep.report import SkipLog


SPARK_RUN_MARKER = "_spark_job"
"""At a split's root while ``--engine spark`` writes it (see ``spark_engine.run_groups``)."""


class DropLog(Protocol):
    def drop(self, reason: str, item_id: Any) -> None: ...


IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
)

_WHITESPACE = re.compile(r"\s+")



def require_file(path: str, what: str) -> str:
    inputs.require_stat(path, what)
    return path


def require_dir(path: str, what: str) -> str:
    if not inputs.is_dir(path):
        raise inputs.missing(path, f"{what} is not a folder: {path}")
    return path


def load_json(path: str, what: str) -> Any:
    """Parse a whole json annotation file; any problem with it is fatal."""
    require_file(path, what)
    try:
        data = inputs.read_bytes(path)
        if data is None:
            raise inputs.missing(path, f"{what} not found: {path}")
        return json.loads(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConversionError(f"cannot read {what} {path}: {e}") from None


def iter_json_lines(path: str, what: str, skipped: SkipLog) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each json line; malformed lines are counted and skipped."""
    require_file(path, what)
    name = os.path.basename(path)
    try:
        with io.TextIOWrapper(inputs.open_binary(path), encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    skipped.add("malformed_json_line", f"{name}:{number}")
                    continue
                if not isinstance(obj, dict):
                    skipped.add("malformed_json_line", f"{name}:{number}")
                    continue
                yield number, obj
    except OSError as e:
        raise ConversionError(f"cannot read {what} {path}: {e}") from None


def clean_text(value: Any) -> str | None:
    """Whitespace-normalised text, or None when ``value`` is not usable text."""
    if not isinstance(value, str):
        return None
    text = _WHITESPACE.sub(" ", value).strip()
    return text or None


def clean_captions(values: list[Any], drops: DropLog, record_id: str) -> list[str]:
    """Keep the usable captions of a record, count the others, skip if none is left."""
    captions, reasons = [], set()
    for i, value in enumerate(values):
        text = clean_text(value)
        if text is not None:
            captions.append(text)
            continue
        reason = "empty_caption" if isinstance(value, str) or value is None else "non_text_caption"
        reasons.add(reason)
        drops.drop(reason, f"{record_id}#{i}")
    if not captions:
        # A record whose only caption is bad is reported under that caption's reason.
        raise SkipRecord(reasons.pop() if len(reasons) == 1 else "no_valid_caption")
    return captions


def is_image_file(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_image_files(root: str) -> list[str]:
    """Image files under ``root`` (recursive), as sorted paths relative to it."""
    return [rel for rel in inputs.list_files(root) if is_image_file(rel)]
