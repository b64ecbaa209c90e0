"""Where a run's files go: one rule for the train command, the dry run, the run report and eval.py.

Composer's ``CheckpointSaver`` writes to ``save_folder`` formatted with
``format_name_with_dist`` (``{run_name}``, and ``{rank}``, ``{world_size}``, ...
from the launcher's environment); ``metrics.jsonl`` and the ``latest-rank{rank}.pt``
pointer sit in that same folder. Local path or ``s3://`` URI alike.
"""

from __future__ import annotations

from typing import Optional


def run_folder(save_folder: str, run_name: Optional[str]) -> str:
    """``save_folder`` with its placeholders filled as Composer fills them, without a trailing ``/``."""
    from composer.utils import format_name_with_dist  # here: Composer imports torch, this module stays light

    return format_name_with_dist(save_folder, run_name or "").rstrip("/")


def latest_checkpoint(save_folder: str, run_name: Optional[str], rank: int = 0) -> str:
    """The ``latest`` checkpoint of ``rank`` that Composer keeps in the run folder (autoresume reads it)."""
    return f"{run_folder(save_folder, run_name)}/latest-rank{rank}.pt"
