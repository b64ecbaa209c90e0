"""Where a remote stream is cached on this node, when the YAML gives no ``local``.

Streaming needs one local directory per stream, and refuses ("Reused local
directory") a directory that a live dataset, or a killed run's leftover shared
memory, has registered; left to itself (``local`` unset) it uses
``/tmp/<hash of remote>`` and fails with ``FileExistsError`` whenever that
directory exists. Here the cache directory is

    <cache root>/<namespace>/<last parts of remote>-<hash of remote and split>

where the namespace names the run and the loader (``<run_name>/train``,
``<run_name>/<eval label>``, ``<run_name>/eval-<label>`` for eval.py) and, in a
multi-node run, the node (``.../node<k>``: a cache root on a shared filesystem,
such as a home directory on NFS, must not be written by two nodes). A rerun or
an autoresumed run derives the same directory and reuses its shards; two runs on
one node, or a training run and eval.py, never share one.

If Streaming has that directory registered right now (the same loader built
twice in one process, as evaluation with re-ranking does, or shared memory left
in ``/dev/shm`` by a killed run), the next free ``<dir>~1``, ``<dir>~2``, ... is
used instead, so nothing blocks a run. The choice is made by each node's local
rank 0 and shared with the other ranks (Streaming needs the same ``local`` on
every rank of a node). Registrations are read from ``/dev/shm`` as plain files
(opening them as shared memory would let Python's resource tracker delete other
jobs' segments at exit), so the check is Linux-only; elsewhere the derived
directory is used as is.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from composer.utils import dist
from streaming.base.constant import LOCALS

from vlmo_composer import stores

CACHE_ROOT_ENV = "VLMO_STREAMING_CACHE"
SHARED_MEMORY = Path("/dev/shm")


def default_cache_root() -> Path:
    """``$VLMO_STREAMING_CACHE``, else ``~/.cache/vlmo_composer/streams``."""
    env = os.environ.get(CACHE_ROOT_ENV)
    return Path(env) if env else Path.home() / ".cache" / "vlmo_composer" / "streams"


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", part).strip("._") or "_"


def cache_namespace(run_name: Optional[str], loader: str) -> str:
    """``<run>/<loader>``: the part of the cache path that keeps jobs and loaders apart."""
    return f"{_safe(run_name or 'default')}/{_safe(loader)}"


def derived_local(remote: str, cache_root: str | os.PathLike, namespace: Optional[str] = None,
                  split: Optional[str] = None) -> str:
    """A cache directory that depends only on ``remote``, ``split`` and the namespace."""
    parts = [p for p in stores.url_path(remote.rstrip("/")).split("/") if p][-2:]
    tail = _safe("_".join(parts + ([split] if split else [])))
    digest = hashlib.blake2s(f"{remote}\0{split or ''}".encode(), digest_size=6).hexdigest()
    root = Path(cache_root)
    for segment in (namespace or "").split("/"):
        if segment:
            root = root / _safe(segment)
    return str(root / f"{tail}-{digest}")


def registered_locals() -> set[str]:
    """Local directories registered by Streaming datasets on this node (live or left behind)."""
    found: set[str] = set()
    if not SHARED_MEMORY.is_dir():
        return found
    for entry in SHARED_MEMORY.glob(f"*_{LOCALS}"):
        try:
            data = entry.read_bytes()
        except OSError:
            continue
        if len(data) < 4:
            continue
        size = int(np.frombuffer(data[:4], np.int32)[0])
        # Streaming's layout: int32 size, then the dirs and the prefix, each '\0'-terminated.
        found.update(data[4:size].decode("utf-8", "replace").split("\0")[:-1])
    return found


def _first_free(base: str, split: Optional[str], taken: set[str]) -> str:
    candidate, n = base, 0
    while os.path.abspath(os.path.join(candidate, split or "")) in taken:
        n += 1
        candidate = f"{base}~{n}"
    return candidate


def free_locals(entries: Sequence[tuple[str, Optional[str]]], namespace: Optional[str] = None,
                cache_root: str | os.PathLike | None = None) -> list[str]:
    """One cache directory per ``(remote, split)``, free of Streaming registrations, agreed across the node."""
    root = default_cache_root() if cache_root is None else cache_root
    if dist.get_world_size() > dist.get_local_world_size():  # multi-node: never share a (network) cache root
        namespace = f"{namespace or ''}/node{dist.get_node_rank()}"
    choice: list[str] = []
    if dist.get_local_rank() == 0:
        taken = registered_locals()
        for remote, split in entries:
            local = _first_free(derived_local(remote, root, namespace, split), split, taken)
            taken.add(os.path.abspath(os.path.join(local, split or "")))
            choice.append(local)
    if dist.get_world_size() == 1:
        return choice
    gathered = dist.all_gather_object(choice)
    return gathered[dist.get_node_rank() * dist.get_local_world_size()]
