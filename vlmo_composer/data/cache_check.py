"""Check the shards already in a local Streaming cache against the hashes in ``index.json``.

Streaming (0.13) checks ``validate_hash`` only right after it downloads (or
decompresses) a shard; a file already in the cache is trusted as it is, so a
byte flipped on a local disk would be trained on. With ``validate_hash`` set,
every cached shard file is hashed once when the dataset is built (xxh64 reads
several GB/s) before Streaming looks at the cache:

* a mismatch in a stream with a ``remote``: the file is removed and logged, so
  Streaming downloads it again (and validates that copy);
* a mismatch in a local-only stream: :class:`CorruptShardError` names the file.

The MDS writer records a hash per file: ``raw_data`` for the uncompressed shard,
``zip_data`` for the compressed one (data_prep writes ``xxh64`` for both).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Iterable, Optional

from streaming.base.hashing import get_hash

log = logging.getLogger(__name__)


class CorruptShardError(ValueError):
    """A shard file whose bytes do not match the hash its index records."""


def stream_caches(streaming_kwargs: dict[str, Any]) -> list[tuple[str, Optional[str], Optional[str]]]:
    """``(local split dir, remote, hash algorithm)`` for every stream of a dataset's arguments."""
    default_hash = streaming_kwargs.get("validate_hash")
    streams = streaming_kwargs.get("streams")
    if streams:
        entries = [(s.local, s.remote, s.split, s.validate_hash) for s in streams]
    else:
        entries = [(streaming_kwargs.get("local"), streaming_kwargs.get("remote"), streaming_kwargs.get("split"),
                    None)]
    caches = []
    for local, remote, split, algorithm in entries:
        if local:
            remote_dir = os.path.join(str(remote), split or "") if remote else None
            caches.append((os.path.join(str(local), split or ""), remote_dir, algorithm or default_hash))
    return caches


def verify_cached_shards(local: str, remote: Optional[str], algorithm: Optional[str]) -> list[str]:
    """Hash every cached shard file of one stream; returns the files removed for a fresh download."""
    index_path = os.path.join(local, "index.json")
    if not algorithm or not os.path.isfile(index_path):
        return []
    with open(index_path) as f:
        shards = json.load(f)["shards"]
    has_remote = bool(remote) and os.path.abspath(str(remote)) != os.path.abspath(local)
    removed = []
    for shard in shards:
        zip_ok = False
        for part in ("zip_data", "raw_data"):  # a bad raw file is re-derived from a good zip
            info = shard.get(part)
            path = os.path.join(local, info["basename"]) if info else None
            if not path or not os.path.isfile(path):
                continue
            if _matches(path, info, algorithm, index_path):
                zip_ok = zip_ok or part == "zip_data"
                continue
            if not (has_remote or (part == "raw_data" and zip_ok)):
                raise CorruptShardError(f"corrupt shard {path}: its {algorithm} does not match {index_path}; "
                                        "the data is damaged and there is no other copy to restore it from")
            log.warning("corrupt shard %s in the local cache (%s does not match index.json): removed, "
                        "Streaming fetches it again", path, algorithm)
            os.remove(path)
            removed.append(path)
    return removed


def _matches(path: str, info: dict, algorithm: str, index_path: str) -> bool:
    expected = info.get("hashes", {}).get(algorithm)
    if expected is None:
        raise CorruptShardError(f"{index_path}: shard file {info['basename']} has no {algorithm} hash "
                                f"(recorded: {sorted(info.get('hashes', {}))}); set validate_hash to one of "
                                "those or write the dataset with hashes")
    with open(path, "rb") as f:
        return get_hash(algorithm, f.read()) == expected


def verify_stream_caches(caches: Iterable[tuple[str, Optional[str], Optional[str]]]) -> list[str]:
    return [path for cache in caches for path in verify_cached_shards(*cache)]
