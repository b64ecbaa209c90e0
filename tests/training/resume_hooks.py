"""A test-only callback for ``test_resume_s3.py``, loaded by the YAML's ``code_paths:``.

It changes *when* things happen in a training process, never *what* is computed:

* ``symlink_poll_seconds``: with an ``s3://`` save folder, Composer 0.32.1 uploads
  ``latest-rank0.pt.symlink`` (what autoresume reads) only after a helper process
  has seen the checkpoint object in the bucket, polling every 30 s, so every
  finished run waits up to 30 s at the end for that. The callback shortens the
  poll (a private ``CheckpointSaver`` attribute; it fails loudly if that goes away).
* ``slow_from_batch`` / ``slow_seconds``: sleep after every step from that batch
  on, so the run the test kills is still training when its latest checkpoint
  becomes visible in the bucket, however loaded the machine is.
* ``hold_after_batch`` / ``hold_file``: after that step, wait until the test creates
  ``hold_file`` (meanwhile the checkpoint saver keeps uploading the ``latest``
  pointer), so the test acts (an outage, a SIGTERM) at a known step on any machine.
"""

from __future__ import annotations

import os
import time

from composer.callbacks import CheckpointSaver
from composer.core import Callback, State
from composer.loggers import Logger

from vlmo_composer import registry
from vlmo_composer.training.object_store import LATEST_POLL_ATTRIBUTE as POLL_ATTRIBUTE


class ResumeTestHooks(Callback):
    def __init__(self, symlink_poll_seconds: float = 0.2, slow_from_batch: int = 0, slow_seconds: float = 0.0,
                 hold_after_batch: int = 0, hold_file: str = ""):
        self.symlink_poll_seconds = symlink_poll_seconds
        self.slow_from_batch = slow_from_batch
        self.slow_seconds = slow_seconds
        self.hold_after_batch, self.hold_file = hold_after_batch, hold_file

    def init(self, state: State, logger: Logger) -> None:
        savers = [cb for cb in state.callbacks if isinstance(cb, CheckpointSaver)]
        for saver in savers:
            if not hasattr(saver, POLL_ATTRIBUTE):
                raise AttributeError(f"CheckpointSaver has no {POLL_ATTRIBUTE} in this Composer version")
            setattr(saver, POLL_ATTRIBUTE, self.symlink_poll_seconds)

    def batch_end(self, state: State, logger: Logger) -> None:
        if self.slow_seconds > 0 and int(state.timestamp.batch) >= self.slow_from_batch:
            time.sleep(self.slow_seconds)
        if self.hold_file and int(state.timestamp.batch) == self.hold_after_batch:
            savers = [cb for cb in state.callbacks if isinstance(cb, CheckpointSaver)]
            while not os.path.exists(self.hold_file):
                for saver in savers:
                    saver.batch_end(state, logger)  # uploads the `latest` pointer once its checkpoint is in
                time.sleep(0.2)


registry.callbacks.register("resume_test_hooks", ResumeTestHooks)
