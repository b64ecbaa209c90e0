"""A huggingface_hub cache filled by hand, as the library lays it out, for offline reads in tests."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def hub_cache(cache: Path, repo_id: str, folder: Path, revision: str = "0" * 39 + "1",
              repo_type: str = "model") -> Path:
    """``folder`` (and its sub-folders) as huggingface_hub caches a repository
    (https://huggingface.co/docs/hub/local-cache, huggingface_hub's guides/manage-cache):
    ``{models,datasets}--{org}--{name}/blobs/<sha256 of the file>``, ``snapshots/<commit>/<path>`` a
    relative symlink to its blob, ``refs/main`` holding the commit."""
    repo = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / path.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def offline_cache(monkeypatch, root: Path) -> Path:
    """An empty huggingface_hub cache under ``root``, with downloads off (no network in tests)."""
    import huggingface_hub

    cache = root / "hf" / "hub"
    cache.mkdir(parents=True)
    for name, value in (("HF_HUB_CACHE", str(cache)), ("HF_HUB_OFFLINE", "1"), ("VLMO_OFFLINE", "1")):
        monkeypatch.setenv(name, value)
    # huggingface_hub reads its environment once, at import: set what it read.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache
