"""The two kinds of bad input (see ``common.py``), in a module of their own so that
``inputs.py``, which ``common.py`` reads through, can raise them without an import circle."""

from __future__ import annotations


class SkipRecord(Exception):
    """This record produces no sample; ``reason`` is the report's key.

    ``count_detail``: the report also counts ``detail`` as a message (e.g. a
    downloader's error), so the user sees how often each cause occurred.
    """

    def __init__(self, reason: str, detail: str = "", count_detail: bool = False) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.count_detail = count_detail


class ConversionError(Exception):
    """A fatal problem with the inputs or arguments (not with a single record)."""
