"""Pretrained names: the official VLMo checkpoints by name, downloaded once over https into a cache.

``from_pretrained("vlmo-base-patch16-coco-retrieval")``, ``eval.py --weights NAME``
and ``task.init_from: {kind: official, path: NAME}`` all resolve a name here (through
:func:`vlmo_composer.checkpoints.sources.local_copy`); ``https://`` URLs given as a
source are downloaded and cached the same way. ``list_pretrained()`` and
``eval.py --list-pretrained`` show the table.

Names
-----
``vlmo-<size>-patch16[-<task>]``: ``<size>`` is ``base``, ``base-plus`` or ``large``
(the sizes of :data:`~vlmo_composer.model.config.NAMED_CONFIGS`, ``_`` written ``-``);
without ``<task>`` the name is the image-text pre-trained model (stage 3, 224 px);
``<task>`` is ``stage2`` (text-only pre-training, 224 px), ``vqa`` (VQA v2, 480 px),
``nlvr2`` (384 px), ``coco-retrieval`` or ``f30k-retrieval`` (384 px). Each
(size, task) has one published resolution, so it is not part of the name. Names
are matched case-insensitively with ``_`` and ``-`` alike.

Where each value comes from
---------------------------
* URLs, file names, the parameter counts and the reported scores: microsoft/unilm
  ``vlmo/README.md`` at commit :data:`UNILM_COMMIT` ("Pre-trained Models", "Step 2"
  and the fine-tuning tables).
* Resolution and heads: the fine-tuning config each README row names, in the same
  commit's ``vlmo/vlmo/config.py`` (``image_size``; ``vqav2_label_size = 3129``;
  ``loss_names``), and the heads ``vlmo/vlmo/modules/vlmo_module.py`` builds for those
  losses (an ``irtr`` fine-tune builds ITC projections only: no ITM head). When a file
  is loaded its heads are read from its keys, whatever this table says.
* Size: the README's architecture lines (layers, hidden size, number of VL-FFN
  blocks) equal our ``base``, ``base_plus`` and ``large`` configs.
* File size and sha256: **unknown** (``None``). Neither the README nor the release
  repository (github.com/wenhui0924/vlmo_ckpts holds only a README in git; release
  assets are not in it) publishes them. A download is then checked against the
  server's HTTP ``Content-Length`` (and, for a ``torch.save`` zip, a complete
  archive), and the cache records the size and the sha256 it received.
* Availability is not checked here (no network): microsoft/unilm issue #1643
  (open since 2024-10) reports the ``vlmo_large_patch16_224.pt`` link as expired.

The cache
---------
``$VLMO_CACHE``, else ``$XDG_CACHE_HOME/vlmo_composer``, else
``~/.cache/vlmo_composer``; a file lives at ``<cache>/<host>/<url path>`` next to a
``.json`` record (URL, size, sha256). A cached file is used only when its size
equals the registry's (or, where the registry has none, the record's) and its sha256
the registry's where known; otherwise it is named in a warning and downloaded again.
Downloads go to ``<file>.part`` under an exclusive lock (several ranks of one job
download once), resume with an HTTP range request when the server sends a
validator (``ETag``/``Last-Modified``), retry a truncated or failed transfer, and
become the cached file by one atomic rename after every check passed: an
interrupted download is never used. ``VLMO_OFFLINE=1`` forbids downloading (a cache
miss fails naming the file); ``VLMO_PRETRAINED_BASE_URL`` serves the official files
from a mirror (same file names, e.g. an internal https server).

Only ``https://`` is accepted; ``http://`` only to 127.0.0.1/localhost (tests).
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import http.client
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

try:  # POSIX: one process downloads, the others wait for it
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

UNILM_COMMIT = "768a3c873f598bb9b4d4dfb9267b099e35f8fe56"  # microsoft/unilm, vlmo/README.md read here
OFFICIAL_BASE_URL = "https://github.com/wenhui0924/vlmo_ckpts/releases/download/vlmo/"

ENV_CACHE = "VLMO_CACHE"
ENV_BASE_URL = "VLMO_PRETRAINED_BASE_URL"
ENV_OFFLINE = "VLMO_OFFLINE"
ATTEMPTS = 3  # tries per download (a truncated or failed transfer is retried)
RETRY_WAIT_S = 2.0  # times the attempt number
TIMEOUT_S = 60.0  # per connect / read
CHUNK = 1 << 20
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
USER_AGENT = "vlmo_composer"


class DownloadError(ValueError):
    """A download (or the cache) failed; the message names the URL and the cached file.

    A ``ValueError`` like the loaders' other unreadable-source errors, so ``train.py``
    and ``eval.py`` report it in one line.
    """


class UnknownPretrainedName(FileNotFoundError):
    """A source that is neither a local path nor a registered name (the message lists close names)."""


class _Retry(Exception):
    """A transfer that may succeed when tried again (truncated, reset, 5xx, timeout)."""


# ---------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class PretrainedEntry:
    """One downloadable checkpoint."""

    name: str
    url: str
    size: str  # a VLMoConfig named size: the architecture
    image_size: int  # the resolution it was trained / fine-tuned at
    task: str  # vl-pretrain | text-pretrain | vqa | nlvr2 | coco-retrieval | f30k-retrieval | (registered)
    heads: str = ""  # the heads the official module builds for its losses
    file_size: Optional[int] = None  # bytes, where published (None: checked against Content-Length)
    sha256: Optional[str] = None  # where published
    reported: str = ""  # the published score / parameter count
    source: str = ""  # where the values come from
    kind: str = "official"  # the sources.py kind of the file

    @property
    def filename(self) -> str:
        return urllib.parse.unquote(urllib.parse.urlsplit(self.url).path.rsplit("/", 1)[-1])


_SIZE_TOKENS = {"base": "base", "base_plus": "base-plus", "large": "large"}
_PARAMS = {"base": "175M", "base_plus": "167M", "large": "562M"}  # README "Pre-trained Models"
# (task suffix, file name suffix, resolution, task, heads, README section, official config name pattern)
_TASKS = [
    ("", "224", 224, "vl-pretrain", "ITC, VL-ITC, ITM, MLM", "Pre-trained Models", "task_mlm_itm_itc_{s}"),
    ("-stage2", "224_stage2", 224, "text-pretrain", "MLM", "Step 2: Language Pre-Training", "task_textmlm_{s}"),
    ("-vqa", "480_vqa", 480, "vqa", "VQA (3129 answers)", "Configs / VQAv2",
     "task_finetune_vqa_{s}_image480"),
    ("-nlvr2", "384_nlvr2", 384, "nlvr2", "NLVR2 (3 modality types)", "Configs / NLVR2",
     "task_finetune_nlvr2_{s}_image384"),
    ("-coco-retrieval", "384_coco", 384, "coco-retrieval", "ITC (no ITM head)", "Configs / COCO",
     "task_finetune_irtr_coco_{s}_image384"),
    ("-f30k-retrieval", "384_f30k", 384, "f30k-retrieval", "ITC (no ITM head)", "Configs / F30K",
     "task_finetune_irtr_f30k_{s}_image384"),
]
# The README's fine-tuning tables: VQAv2 test-dev, NLVR2 test-P, COCO / F30K TR@1 and IR@1.
_REPORTED = {
    ("base", "vqa"): "VQAv2 test-dev 76.6", ("base_plus", "vqa"): "VQAv2 test-dev 78.5",
    ("large", "vqa"): "VQAv2 test-dev 79.9",
    ("base", "nlvr2"): "NLVR2 test-P 83.3", ("base_plus", "nlvr2"): "NLVR2 test-P 85.1",
    ("large", "nlvr2"): "NLVR2 test-P 86.9",
    ("base", "coco-retrieval"): "COCO TR@1 74.8 IR@1 57.2", ("base_plus", "coco-retrieval"): "COCO TR@1 76.3 IR@1 58.6",
    ("large", "coco-retrieval"): "COCO TR@1 78.2 IR@1 60.6",
    ("base", "f30k-retrieval"): "F30K TR@1 92.3 IR@1 79.3", ("base_plus", "f30k-retrieval"): "F30K TR@1 93.2 IR@1 81.8",
    ("large", "f30k-retrieval"): "F30K TR@1 95.3 IR@1 84.5",
}


def _official_entries() -> dict[str, PretrainedEntry]:
    entries = {}
    for size, token in _SIZE_TOKENS.items():
        for suffix, file_suffix, image_size, task, heads, section, config in _TASKS:
            name = f"vlmo-{token}-patch16{suffix}"
            file = f"vlmo_{size}_patch16_{file_suffix}.pt"
            reported = _REPORTED.get((size, task), f"{_PARAMS[size]} parameters" if task == "vl-pretrain" else "")
            source = (f"microsoft/unilm@{UNILM_COMMIT[:7]} vlmo/README.md ({section}); resolution and heads: "
                      f"vlmo/config.py {config.format(s=size)} and vlmo_module.py; file size, sha256: not published")
            entries[name] = PretrainedEntry(name, OFFICIAL_BASE_URL + file, size, image_size, task, heads,
                                            reported=reported, source=source)
    return entries


_REGISTRY: dict[str, PretrainedEntry] = _official_entries()


def normalise_name(name: str) -> str:
    return name.strip().lower().replace("_", "-")


class PretrainedNames(list):
    """The registered names (a ``list``) that show as the table when printed or echoed."""

    def __str__(self) -> str:
        return pretrained_table()

    __repr__ = __str__


def list_pretrained() -> PretrainedNames:
    """Every registered name, as open_clip's ``list_pretrained``; printed (or echoed in a REPL) it is the table."""
    return PretrainedNames(_REGISTRY)


def find_pretrained(name: Union[str, os.PathLike]) -> Optional[PretrainedEntry]:
    """The entry of ``name`` (any case, ``_`` or ``-``), or None."""
    return _REGISTRY.get(normalise_name(os.fspath(name)))


def get_pretrained(name: str) -> PretrainedEntry:
    """The entry of ``name``; an unknown name fails in one line listing the close ones."""
    entry = find_pretrained(name)
    if entry is None:
        raise UnknownPretrainedName(f"'{name}' is not a pretrained name{_close_hint(name)}")
    return entry


def is_pretrained_name(source: Union[str, os.PathLike]) -> bool:
    """A registered name that is not also a local path (a local file or folder of that name wins)."""
    source = os.fspath(source)
    return find_pretrained(source) is not None and not os.path.exists(source)


def register_pretrained(
    name: str,
    url: str,
    size: str,
    image_size: int,
    task: str = "custom",
    *,
    heads: str = "",
    file_size: Optional[int] = None,
    sha256: Optional[str] = None,
    reported: str = "",
    source: str = "registered at run time",
    overwrite: bool = False,
) -> PretrainedEntry:
    """Add a name (e.g. your own fine-tune on an https server, or a test file on 127.0.0.1).

    ``size`` is a named VLMo size; ``file_size``/``sha256`` are checked when given.
    """
    from vlmo_composer.model.config import NAMED_CONFIGS

    key = normalise_name(name)
    if not key or "/" in key or "://" in key:
        raise ValueError(f"pretrained name '{name}' must be a plain name (no '/')")
    if key in _REGISTRY and not overwrite:
        raise ValueError(f"pretrained name '{key}' is already registered ({_REGISTRY[key].url}); pass overwrite=True")
    if size not in NAMED_CONFIGS:
        raise ValueError(f"size '{size}' is not one of {sorted(NAMED_CONFIGS)}")
    check_url(url)
    if sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"sha256 must be 64 lowercase hex digits, got {sha256!r}")
    entry = PretrainedEntry(key, url, size, int(image_size), task, heads, file_size, sha256, reported, source)
    _REGISTRY[key] = entry
    return entry


def unregister_pretrained(name: str) -> None:
    _REGISTRY.pop(normalise_name(name), None)


def pretrained_url(entry: Union[str, PretrainedEntry]) -> str:
    """Where ``entry`` is downloaded from: its URL, or the same file under ``$VLMO_PRETRAINED_BASE_URL``."""
    entry = get_pretrained(entry) if isinstance(entry, str) else entry
    base = os.environ.get(ENV_BASE_URL)
    if base and entry.url.startswith(OFFICIAL_BASE_URL):
        url = base.rstrip("/") + "/" + entry.url[len(OFFICIAL_BASE_URL):]
        check_url(url, f"{ENV_BASE_URL}={base}")
        return url
    return entry.url


def pretrained_size(source: Union[str, os.PathLike, None]) -> Optional[str]:
    """The named size of a registered name (None for anything else): a name knows its architecture."""
    if source is None or not is_pretrained_name(source):
        return None
    return find_pretrained(source).size


def _close_hint(name: str) -> str:
    key = normalise_name(os.path.basename(os.fspath(name)))
    by_file = [e.name for e in _REGISTRY.values() if normalise_name(e.filename) == key]
    close = by_file + [n for n in difflib.get_close_matches(key, list(_REGISTRY), n=3, cutoff=0.6) if n not in by_file]
    if not close:
        return " (eval.py --list-pretrained lists them)"
    return f"; close names: {', '.join(close)} (eval.py --list-pretrained lists all)"


def missing_source_error(path: str) -> FileNotFoundError:
    """The error for a source that is not there: an unknown name lists the close names."""
    if "/" not in path and normalise_name(path).startswith("vlmo-") and not os.path.splitext(path)[1]:
        return UnknownPretrainedName(f"'{path}' is neither a local path nor a pretrained name{_close_hint(path)}")
    hint = _close_hint(path)
    return FileNotFoundError(f"{path} not found" + (hint if "close names" in hint else ""))


# ---------------------------------------------------------------------- table
def pretrained_table() -> str:
    """The registry as a table (``eval.py --list-pretrained``), with what is in the cache."""
    rows = [("name", "arch", "px", "heads", "reported", "file", "bytes", "sha256", "cache")]
    for e in _REGISTRY.values():
        try:
            cached = cache_path(pretrained_url(e)).is_file()
        except DownloadError:  # a bad VLMO_PRETRAINED_BASE_URL: said when downloading
            cached = False
        rows.append((e.name, e.size, str(e.image_size), e.heads or "-", e.reported or "-", e.filename,
                     str(e.file_size) if e.file_size is not None else "?", e.sha256[:12] if e.sha256 else "?",
                     "cached" if cached else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    official = sum(e.url.startswith(OFFICIAL_BASE_URL) for e in _REGISTRY.values())
    base = os.environ.get(ENV_BASE_URL)
    lines += [
        "",
        f"{official} official files from {OFFICIAL_BASE_URL}<file>"
        + (f" (served from {base} here: {ENV_BASE_URL})" if base else ""),
        f"(microsoft/unilm vlmo/README.md @ {UNILM_COMMIT[:7]}); others: register_pretrained().",
        "bytes/sha256 '?': not published; a download is checked against the server's Content-Length.",
        f"cache: {cache_dir()} (${ENV_CACHE})",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------- URLs and the cache
def is_url(source: Union[str, os.PathLike]) -> bool:
    return isinstance(source, str) and source.startswith(("https://", "http://"))


def check_url(url: str, where: Optional[str] = None) -> None:
    """https only; http only to a loopback host (a test server)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS):
        if not parts.hostname:
            raise DownloadError(f"{where or url}: no host in the URL")
        return
    raise DownloadError(f"{where or url}: weights are downloaded over https:// only "
                        "(http:// only from 127.0.0.1/localhost, for tests)")


def cache_dir() -> Path:
    """``$VLMO_CACHE``, else ``$XDG_CACHE_HOME/vlmo_composer``, else ``~/.cache/vlmo_composer``."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "vlmo_composer"


def cache_path(url: str, root: Union[str, os.PathLike, None] = None) -> Path:
    """``<cache>/<host[_port]>/<url path>``: readable, and one file per URL."""
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "") + (f"_{parts.port}" if parts.port else "")
    segments = [re.sub(r"[^A-Za-z0-9._+-]", "_", s) for s in urllib.parse.unquote(parts.path).split("/")]
    segments = [s for s in segments if s not in ("", ".", "..")]
    if not segments:
        raise DownloadError(f"{url}: the URL names no file")
    if parts.query:  # signed URLs: one cached file per query
        segments[-1] += "-" + hashlib.sha256(parts.query.encode()).hexdigest()[:12]
    return Path(root if root is not None else cache_dir()).joinpath(re.sub(r"[^A-Za-z0-9._-]", "_", host), *segments)


def _record_path(target: Path) -> Path:
    return target.with_name(target.name + ".json")


def _read_json(path: Path) -> Optional[dict]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _write_json(path: Path, value: dict) -> None:
    temp = path.with_name(path.name + f".tmp{os.getpid()}")
    temp.write_text(json.dumps(value, indent=1) + "\n")
    os.replace(temp, path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _cache_problem(target: Path, url: str, file_size: Optional[int], sha256: Optional[str]) -> Optional[str]:
    """Why the cached ``target`` cannot be used (None: it can)."""
    if not target.exists():
        return "is not in the cache"
    if not target.is_file():
        return "is not a file"
    actual = target.stat().st_size
    record = _read_json(_record_path(target))
    if file_size is not None and actual != file_size:
        return f"is {actual} bytes but the registry says {file_size}"
    if record is None or record.get("url") != url:
        return "has no download record for this URL (an interrupted or foreign copy), so it cannot be checked"
    if file_size is None and actual != record.get("size"):
        return f"is {actual} bytes but {record.get('size')} were downloaded"
    if sha256 is not None and _sha256(target) != sha256:
        return f"does not have the registry's sha256 {sha256}"
    return None


def _offline() -> bool:
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def _exclusive(target: Path) -> Iterator[None]:
    """Hold ``<target>.lock``: several processes (ranks) download a file once; the others wait."""
    lock = target.with_name(target.name + ".lock")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a+b")
    except OSError as err:
        raise DownloadError(f"cache folder {target.parent} cannot be written ({err.strerror or err}); "
                            f"set {ENV_CACHE} to a writable folder") from None
    with handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                sys.stderr.write(f"waiting for another process downloading {target}\n")
                fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------------- downloading
def download_pretrained(name: Union[str, PretrainedEntry], cache: Union[str, os.PathLike, None] = None) -> Path:
    """The local file of a registered name, downloaded (and checked) on first use."""
    entry = get_pretrained(name) if isinstance(name, str) else name
    return download_url(pretrained_url(entry), file_size=entry.file_size, sha256=entry.sha256,
                        cache=cache, name=entry.name)


def download_url(
    url: str,
    file_size: Optional[int] = None,
    sha256: Optional[str] = None,
    cache: Union[str, os.PathLike, None] = None,
    name: Optional[str] = None,
) -> Path:
    """``url``'s file in the cache: used as is when it checks out, else downloaded atomically.

    ``file_size``/``sha256`` are checked when given; the server's ``Content-Length``
    always. A truncated or failed transfer is retried (resumed where the server
    allows) up to :data:`ATTEMPTS` times; nothing reaches the cache unchecked.
    """
    check_url(url)
    target = cache_path(url, cache)
    what = f"{name} ({url})" if name else url
    if _cache_problem(target, url, file_size, sha256) is None:  # a hit needs no lock (read-only caches work)
        return target
    if target.is_dir():
        raise DownloadError(f"{what}: {target} in the cache is a folder: remove it")
    if _offline():
        raise DownloadError(f"{what}: {target} {_cache_problem(target, url, file_size, sha256)}, and "
                            f"{ENV_OFFLINE} is set: nothing is downloaded")
    with _exclusive(target):
        problem = _cache_problem(target, url, file_size, sha256)  # another process may have just finished it
        if problem is None:
            return target
        stale = target.exists()
        if stale:
            warnings.warn(f"{target} {problem}: downloading it again from {url}", stacklevel=2)
        try:
            _download(url, target, file_size, sha256, what)
        except DownloadError as err:
            raise DownloadError(f"{err}; the cached {target} {problem} and was not used" if stale else str(err)) from None
    return target


def _download(url: str, target: Path, file_size: Optional[int], sha256: Optional[str], what: str) -> None:
    part = target.with_name(target.name + ".part")
    sys.stderr.write(f"Downloading {what} to {target}\n")
    last = ""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _transfer(url, part, file_size, what)
            size, digest = _verify(part, url, file_size, sha256)
        except _Retry as err:
            last = str(err)
            if attempt < ATTEMPTS:
                sys.stderr.write(f"{url}: {last}; trying again ({attempt + 1}/{ATTEMPTS})\n")
                time.sleep(RETRY_WAIT_S * attempt)
            continue
        _write_json(_record_path(target), {"url": url, "size": size, "sha256": digest,
                                           "downloaded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        os.replace(part, target)  # the cached file appears complete, or not at all
        _part_meta(part).unlink(missing_ok=True)
        return
    raise DownloadError(f"{what}: download failed {ATTEMPTS} times (last: {last}); nothing was written to {target}")


def _part_meta(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _part_meta(part).unlink(missing_ok=True)


def _transfer(url: str, part: Path, file_size: Optional[int], what: str) -> Optional[int]:
    """One GET into ``part`` (resumed from its end when the server can); returns the total size, if announced."""
    meta = _read_json(_part_meta(part)) or {}
    offset = part.stat().st_size if part.exists() else 0
    validator = meta.get("etag") or meta.get("last_modified")
    resume = offset > 0 and meta.get("url") == url and bool(validator)
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if resume:
        headers.update({"Range": f"bytes={offset}-", "If-Range": validator})
    try:
        response = _opener(url).open(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 or err.code >= 500 or err.code in (408, 429):
            if err.code == 416:
                _discard(part)
            raise _Retry(f"HTTP {err.code} {err.reason}") from None
        raise DownloadError(f"{what}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        raise _Retry(f"cannot connect ({getattr(err, 'reason', err)})") from None
    with response:
        final = response.geturl()
        if url.startswith("https://") and not final.startswith("https://"):
            raise DownloadError(f"{what}: redirected to {final}, which is not https: refused")
        if response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != offset:
                _discard(part)
                raise _Retry(f"the server resumed at byte {start}, not {offset}")
            mode = "ab"
        else:
            offset, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            _write_json(_part_meta(part), {"url": url, "etag": response.headers.get("ETag"),
                                           "last_modified": response.headers.get("Last-Modified"), "total": total})
        if file_size is not None and total is not None and total != file_size:
            _discard(part)
            raise DownloadError(f"{what}: the server sends {total} bytes but the registry says {file_size}: refused")
        broken = None
        with open(part, mode) as fh, _progress(total, offset, part.name[: -len(".part")]) as bar:
            try:
                while block := response.read(CHUNK):
                    fh.write(block)
                    bar.update(len(block))
            except (http.client.HTTPException, OSError) as err:  # reset, timeout, IncompleteRead
                broken = err
    got = part.stat().st_size
    if total is None:
        if broken is not None:
            _discard(part)  # without a size and a validator nothing can be resumed
            raise _Retry(f"connection lost after {got} bytes ({broken})")
        return None
    if got < total:
        raise _Retry(f"truncated: {got} of {total} bytes arrived" + (f" ({broken})" if broken else ""))
    if got > total:
        _discard(part)
        raise _Retry(f"{got} bytes arrived but {total} were announced")
    return total


def _opener(url: str) -> urllib.request.OpenerDirector:
    """The default opener (environment proxies honoured), except that loopback is never proxied."""
    if urllib.parse.urlsplit(url).hostname in LOOPBACK_HOSTS:
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener()


def _content_range(value: Optional[str]) -> tuple[int, Optional[int]]:
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (value or "").strip())
    if not match:
        return -1, None
    return int(match.group(1)), None if match.group(2) == "*" else int(match.group(2))


def _verify(part: Path, url: str, file_size: Optional[int], sha256: Optional[str]) -> tuple[int, str]:
    """The finished ``part`` checked: size, a complete zip (``torch.save``), sha256. Returns (size, sha256)."""
    size = part.stat().st_size
    if file_size is not None and size != file_size:
        _discard(part)
        raise _Retry(f"{size} bytes arrived but the registry says {file_size}")
    with open(part, "rb") as fh:
        zipped = fh.read(4) == b"PK\x03\x04"
    if zipped and not zipfile.is_zipfile(part):
        _discard(part)
        raise _Retry("the file is not a complete zip archive (torch.save): truncated")
    digest = _sha256(part)
    if sha256 is not None and digest != sha256:
        _discard(part)
        raise DownloadError(f"{url}: sha256 {digest} is not the registry's {sha256}: refused, nothing cached")
    return size, digest


def _progress(total: Optional[int], initial: int, label: str):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return contextlib.nullcontext(type("Bar", (), {"update": lambda self, n: None})())
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=label, disable=None, file=sys.stderr, leave=False)


# ---------------------------------------------------------------------- for the CLIs
def describe_source(source: str) -> Optional[str]:
    """For ``--dry-run``: a name or URL, where it comes from and whether it is cached (None otherwise)."""
    if is_pretrained_name(source):
        entry = find_pretrained(source)
        url = pretrained_url(entry)
        name = f"{entry.name} ({entry.size}, {entry.image_size} px, {entry.task}) = {url}"
    elif is_url(source):
        url, name = source, source
    else:
        return None
    target = cache_path(url)
    return f"{name} ({'cached: ' if target.is_file() else 'downloaded on first use to '}{target})"


if __name__ == "__main__":
    print(pretrained_table())
