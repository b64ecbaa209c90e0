"""YAML ``streams:`` entries -> ``streaming.Stream`` objects, checked before Streaming sees them.

Accepted forms: a list of mappings (optionally with a ``name``) or a mapping
``name -> mapping`` (llm-foundry's form). Each entry takes ``Stream``'s own
keys: ``remote``, ``local``, ``split``, one of ``proportion`` | ``repeat`` |
``choose``, ``download_retry``, ``download_timeout``, ``validate_hash``,
``keep_zip``.

Checks, each naming the stream: unknown keys; neither ``remote`` nor
``local``; more than one weight in a stream; ``proportion`` on some streams
but not all (relative and absolute weights cannot be mixed; ``repeat`` and
``choose`` may be, both being absolute); two streams sharing a local cache
directory (Streaming needs one per stream).

``local`` may be omitted for a remote stream: the cache directory is then
derived from the remote, the split and the namespace (run and loader), stable
across reruns and never one Streaming has registered (see ``local_cache``).
A stream set to ``null`` (``train_loader.dataset.streams.vg=null``) is left out.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from streaming import Stream

from vlmo_composer.data.local_cache import CACHE_ROOT_ENV, default_cache_root, derived_local, free_locals

STREAM_KEYS = frozenset(
    {
        "remote",
        "local",
        "split",
        "proportion",
        "repeat",
        "choose",
        "download_retry",
        "download_timeout",
        "validate_hash",
        "keep_zip",
    }
)
WEIGHT_KEYS = ("proportion", "repeat", "choose")
__all__ = ["CACHE_ROOT_ENV", "build_streams", "default_cache_root", "derived_local"]


def _named_entries(stream_cfgs: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> list[tuple[str, dict]]:
    if isinstance(stream_cfgs, Mapping):
        items = list(stream_cfgs.items())
    elif isinstance(stream_cfgs, Sequence) and not isinstance(stream_cfgs, str):
        items = [(None, cfg) for cfg in stream_cfgs]
    else:
        raise TypeError(
            f"streams must be a list or a mapping of stream configs, got {type(stream_cfgs).__name__}"
        )
    entries = []
    for i, (key, cfg) in enumerate(items):
        if cfg is None:  # removed by an override
            continue
        if not isinstance(cfg, Mapping):
            raise TypeError(
                f"stream {key or i}: expected a mapping of Stream arguments, got {type(cfg).__name__}"
            )
        cfg = dict(cfg)
        name = str(key if key is not None else cfg.pop("name", f"streams[{i}]"))
        entries.append((name, cfg))
    if not entries:
        raise ValueError("streams is empty: give at least one stream")
    return entries


def _check_weights(entries: list[tuple[str, dict]]) -> None:
    for name, cfg in entries:
        given = [k for k in WEIGHT_KEYS if cfg.get(k) is not None]
        if len(given) > 1:
            raise ValueError(f"stream '{name}' sets {given}: give at most one of {list(WEIGHT_KEYS)}")
    with_proportion = [name for name, cfg in entries if cfg.get("proportion") is not None]
    without = [name for name, cfg in entries if cfg.get("proportion") is None]
    if with_proportion and without:
        raise ValueError(
            f"streams {with_proportion} use 'proportion' but {without} do not: relative weights "
            "('proportion') must be given on every stream, or use absolute ones ('repeat'/'choose')"
        )


def build_streams(
    stream_cfgs: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    cache_root: str | os.PathLike | None = None,
    namespace: str | None = None,
) -> list[Stream]:
    """Checked ``Stream``s from YAML entries (see the module doc)."""
    return make_streams(stream_arguments(stream_cfgs, cache_root, namespace))


def make_streams(arguments: Sequence[tuple[str, dict[str, Any]]]) -> list[Stream]:
    """New ``Stream`` objects from :func:`stream_arguments` (Streaming writes the derived
    weights into them, so a dataset built again needs new ones)."""
    streams = []
    for name, cfg in arguments:
        try:
            streams.append(Stream(**cfg))
        except ValueError as err:
            raise ValueError(f"stream '{name}': {err}") from err
    return streams


def stream_arguments(
    stream_cfgs: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    cache_root: str | os.PathLike | None = None,
    namespace: str | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """``(name, Stream keyword arguments)`` per entry, checked, each with its ``local`` (derived
    ones agreed across the node's ranks: a collective when the world size is above 1)."""
    entries = _named_entries(stream_cfgs)
    for name, cfg in entries:
        unknown = sorted(set(cfg) - STREAM_KEYS)
        if unknown:
            raise ValueError(f"stream '{name}': unknown keys {unknown}; allowed: {sorted(STREAM_KEYS)}")
        if not cfg.get("remote") and not cfg.get("local"):
            raise ValueError(
                f"stream '{name}': give 'remote' (and optionally 'local') or a 'local' directory"
            )
    _check_weights(entries)

    derive = [cfg for _, cfg in entries if not cfg.get("local")]
    for cfg, local in zip(derive, free_locals([(str(c["remote"]), c.get("split")) for c in derive],
                                             namespace, cache_root)):
        cfg["local"] = local
    owner_of_cache: dict[str, str] = {}
    for name, cfg in entries:
        cache = os.path.abspath(os.path.join(os.path.expanduser(str(cfg["local"])), cfg.get("split") or ""))
        if cache in owner_of_cache:
            raise ValueError(
                f"streams '{owner_of_cache[cache]}' and '{name}' share the local directory {cache}: "
                "every stream needs its own 'local'"
            )
        owner_of_cache[cache] = name
    return entries
