"""Exact mid-epoch resumption with Streaming datasets."""

from __future__ import annotations

from typing import Optional

from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import reproducibility


class MidEpochRngRestore(Callback):
    """Restore the checkpoint's RNG state when a run resumes in the middle of an epoch.

    Composer 0.32 restores it only at an epoch start or while spinning the
    dataloader forward; a Streaming dataset resumes by itself, so neither happens
    and hard-negative sampling and drop-path would draw fresh numbers. Restoring it
    just before the first batch (after the dataloader iterator took its seed) makes
    a resumed run equal an uninterrupted one.
    """

    def __init__(self) -> None:
        self.rng_state: Optional[list] = None

    def before_dataloader(self, state: State, logger: Logger) -> None:
        if self.rng_state is not None:
            reproducibility.load_rng_state(self.rng_state)
            self.rng_state = None
