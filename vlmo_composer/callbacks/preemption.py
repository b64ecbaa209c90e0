"""Checkpoint at the current batch on SIGTERM (spot notice, Kubernetes eviction) and stop.

On SIGTERM the handler only records the time (signal handlers must not do I/O).
After the batch in progress, at ``BATCH_CHECKPOINT`` (so after Composer's own
``CheckpointSaver`` has run for that batch), this callback saves a checkpoint
unless the saver just did, waits until it and the ``latest`` pointer are in the
remote folder, and raises :class:`Preempted`. ``train.py`` then closes the
trainer and exits with code 143 (128 + SIGTERM); the same command later resumes
from that checkpoint (autoresume).

A watchdog thread ends the process when ``grace_seconds`` after the signal have
passed without a durable checkpoint, before the platform's SIGKILL would, so the
log says why. With several ranks all of them must save the same batch: every
step all-reduces the "preempted" flag (one tiny collective), so a signal that
reaches the ranks at different steps still makes them stop together.

Under ``composer`` (the launcher) a SIGTERM to the launcher reaches every rank:
Composer's import installs a SIGTERM handler (``composer.core.engine``) that turns
it into ``SystemExit``, and the launcher's cleanup sends SIGTERM to the ranks and
SIGKILL 30 s later. In the ranks this callback's handler replaces Composer's.

The hook uses two private ``CheckpointSaver`` members of Composer 0.32
(``_save_checkpoint`` and the ``latest`` pointer's poll interval) and fails
loudly if they go away.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import Any, Optional

import torch
from composer.callbacks import CheckpointSaver
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

log = logging.getLogger(__name__)

PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM

# How often Composer's CheckpointSaver asks whether the checkpoint the ``latest`` pointer names has
# landed (a private attribute, Composer 0.32); this callback and training.object_store set it.
LATEST_POLL_ATTRIBUTE = "_symlink_upload_wait_before_next_try_in_seconds"


class Preempted(Exception):
    """Training stopped on SIGTERM after a durable checkpoint."""

    def __init__(self, batch: int, checkpoint: Optional[str], seconds: float) -> None:
        self.batch, self.checkpoint, self.seconds = batch, checkpoint, seconds
        super().__init__(f"preempted (SIGTERM) at batch {batch}: checkpoint {checkpoint} durable "
                         f"{seconds:.1f}s after the signal")


class PreemptionCheckpoint(Callback):
    def __init__(self, grace_seconds: float = 30.0) -> None:
        if grace_seconds <= 0:
            raise ValueError(f"preemption_grace_seconds must be positive, got {grace_seconds}")
        self.grace_seconds = grace_seconds
        self.signalled_at: Optional[float] = None
        self._durable = threading.Event()
        self._previous_handler: Any = None
        if threading.current_thread() is threading.main_thread():  # from construction on: a signal
            self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)  # during setup counts

    # ---- the signal
    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if self.signalled_at is not None:
            return
        self.signalled_at = time.monotonic()
        threading.Thread(target=self._watchdog, name="preemption-watchdog", daemon=True).start()

    def _watchdog(self) -> None:
        if not self._durable.wait(self.grace_seconds):
            print(f"preemption: no durable checkpoint within the {self.grace_seconds:.0f}s grace period "
                  "(preemption_grace_seconds); exiting without one. The next run resumes from the "
                  "previous checkpoint.", file=sys.stderr, flush=True)
            os._exit(PREEMPTED_EXIT_CODE)

    def _preempted_anywhere(self) -> bool:
        flag = self.signalled_at is not None
        if dist.get_world_size() == 1:
            return flag
        tensor = torch.tensor([int(flag)], dtype=torch.uint8)
        dist.all_reduce(tensor, reduce_operation="MAX")
        return bool(tensor.item())

    # ---- the checkpoint
    def batch_checkpoint(self, state: State, logger: Logger) -> None:
        if not self._preempted_anywhere():
            return
        if self.signalled_at is None:  # another rank got the signal first
            self.signalled_at = time.monotonic()
        savers = [cb for cb in state.callbacks if isinstance(cb, CheckpointSaver)]
        checkpoint = None
        for saver in savers:
            for name in ("_save_checkpoint", LATEST_POLL_ATTRIBUTE):
                if not hasattr(saver, name):
                    raise AttributeError(f"CheckpointSaver has no {name} in this Composer version")
            setattr(saver, LATEST_POLL_ATTRIBUTE, 0.2)
            if saver.last_checkpoint_batch != state.timestamp.batch:
                saver._save_checkpoint(state, logger)
            saver.fit_end(state, logger)  # waits for the upload and the `latest` pointer
            checkpoint = saver.saved_checkpoints[-1] if saver.saved_checkpoints else None
        if not savers:
            log.warning("SIGTERM: no save_folder configured, stopping without a checkpoint")
        self._durable.set()
        raise Preempted(int(state.timestamp.batch), checkpoint, time.monotonic() - self.signalled_at)

    def close(self, state: State, logger: Logger) -> None:
        if self._previous_handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None
