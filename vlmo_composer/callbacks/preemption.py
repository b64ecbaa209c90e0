"""Checkpoint at the current batch on SIGTERM (spot notice, Kubernetes eviction) or Ctrl-C and stop.

On SIGTERM the handler only records the time (signal handlers must not do I/O).
After the batch in progress, at ``BATCH_CHECKPOINT`` (so after Composer's own
``CheckpointSaver`` has run for that batch), this callback saves a checkpoint
unless the saver just did, waits until it and the ``latest`` pointer are in the
remote folder, and raises :class:`Preempted`. ``train.py`` then closes the
trainer and exits with code 143 (128 + SIGTERM); the same command later resumes
from that checkpoint (autoresume).

SIGINT (Ctrl-C) once training has started is handled the same way and exits with
code 130 (128 + SIGINT); a second Ctrl-C stops at once without a checkpoint, and
one before the first batch stops at once too (there is no batch to save).

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


PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM
INTERRUPTED_EXIT_CODE = 128 + signal.SIGINT
SIGNALS = (signal.SIGTERM, signal.SIGINT)

# How often Composer's CheckpointSaver asks whether the checkpoint the ``latest`` pointer names has
# landed (a private attribute, Composer 0.32); this callback and training.object_store set it.
LATEST_POLL_ATTRIBUTE = "_symlink_upload_wait_before_next_try_in_seconds"


class Preempted(Exception):
    """Training stopped on SIGTERM or SIGINT after a durable checkpoint (``checkpoint`` None: none configured)."""

    def __init__(self, batch: int, checkpoint: Optional[str], seconds: float,
                 signum: int = signal.SIGTERM) -> None:
        self.batch, self.checkpoint, self.seconds, self.signum = batch, checkpoint, seconds, signum
        self.exit_code = 128 + signum
        what = "interrupted (SIGINT)" if signum == signal.SIGINT else "preempted (SIGTERM)"
        saved = (f"checkpoint {checkpoint} durable {seconds:.1f}s after the signal" if checkpoint
                 else "no checkpoint saved (no save_folder)")
        super().__init__(f"{what} at batch {batch}: {saved}")


class PreemptionCheckpoint(Callback):
    def __init__(self, grace_seconds: float = 30.0) -> None:
        if grace_seconds <= 0:
            raise ValueError(f"preemption_grace_seconds must be positive, got {grace_seconds}")
        self.grace_seconds = grace_seconds
        self.signalled_at: Optional[float] = None
        self.signum: int = signal.SIGTERM
        self.training = False  # between the first batch and the end of fit
        self._durable = threading.Event()
        self._previous_handlers: dict[int, Any] = {}
        self._pid = os.getpid()  # forked children (dataloader workers) inherit the handler
        if threading.current_thread() is threading.main_thread():  # from construction on: a SIGTERM
            for signum in SIGNALS:  # during setup counts
                self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    # ---- the signal
    def _on_signal(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:
            return  # a dataloader worker (Ctrl-C reaches the whole process group): the trainer stops it
        if signum == signal.SIGINT and (not self.training or self.signalled_at is not None):
            # Ctrl-C before the first batch, or a second one: stop now (as Composer's own handler does)
            print("interrupted (SIGINT): stopping now, no checkpoint saved", file=sys.stderr, flush=True)
            raise SystemExit(INTERRUPTED_EXIT_CODE)
        if self.signalled_at is not None:
            return
        self.signalled_at, self.signum = time.monotonic(), signum
        threading.Thread(target=self._watchdog, name="preemption-watchdog", daemon=True).start()

    def _watchdog(self) -> None:
        if not self._durable.wait(self.grace_seconds):
            print(f"preemption: no durable checkpoint within the {self.grace_seconds:.0f}s grace period "
                  "(preemption_grace_seconds); exiting without one. The next run resumes from the "
                  "previous checkpoint.", file=sys.stderr, flush=True)
            os._exit(128 + self.signum)

    def before_dataloader(self, state: State, logger: Logger) -> None:
        self.training = True

    def fit_end(self, state: State, logger: Logger) -> None:
        self.training = False

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
        self._durable.set()
        raise Preempted(int(state.timestamp.batch), checkpoint, time.monotonic() - self.signalled_at, self.signum)

    def close(self, state: State, logger: Logger) -> None:
        self.training = False
        if self._previous_handlers and threading.current_thread() is threading.main_thread():
            for signum, handler in self._previous_handlers.items():
                signal.signal(signum, handler)
            self._previous_handlers = {}
