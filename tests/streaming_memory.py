"""Give back the shared memory of Streaming datasets a test no longer holds.

Streaming registers every ``SharedMemory`` it creates with ``atexit`` (to unlink it
if the process is killed mid-run), so the memory and its two file descriptors
(the shm fd and the mmap's) outlive the dataset until the process exits. A
training process builds a few datasets; this suite builds thousands in one
process and ran past a 20,000-descriptor limit. Once the dataset is gone the
atexit entry is the only holder: such entries are cleaned up (closed, and
unlinked by their creator) and unregistered here, exactly as at exit.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys

from streaming.base.shared.memory import SharedMemory

# Held by: the list below, the loop variable, getrefcount's argument and the atexit
# entry (a bound ``cleanup`` method). Anything more is a live owner.
_ORPHAN_REFCOUNT = 4


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def release_orphaned_streaming_memory() -> int:
    """Clean up every Streaming ``SharedMemory`` that only ``atexit`` still holds; return how many."""
    gc.collect()
    found = [obj for obj in gc.get_objects() if isinstance(obj, SharedMemory)]
    released = 0
    for shm in found:
        if sys.getrefcount(shm) <= _ORPHAN_REFCOUNT:
            atexit.unregister(shm.cleanup)
            shm.cleanup()
            released += 1
    del found
    return released
