"""Pretrained names (checkpoints/pretrained.py) against a local HTTP server: no network.

The server (http.server on 127.0.0.1, in a thread) serves official-layout files,
counts the requests it gets, and can cut responses short or ignore range requests.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from vlmo_composer import VLMoInference, list_pretrained, register_pretrained
from vlmo_composer.checkpoints import load_official, pretrained
from vlmo_composer.checkpoints.official import save_official
from vlmo_composer.checkpoints.pretrained import (
    DownloadError,
    UnknownPretrainedName,
    cache_path,
    download_pretrained,
    find_pretrained,
    get_pretrained,
    unregister_pretrained,
)
from vlmo_composer.checkpoints.sources import local_copy

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "yamls" / "quickstart.yaml")
NAME = "test-vlmo-tiny"


class FileServer:
    """Files by URL path; ``truncate`` cuts the next N bodies in half; ``ranges`` answers Range requests."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.truncate = 0
        self.ranges = True
        self.delay = 0.0
        state = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                state.requests.append((self.path, self.headers.get("Range")))
                time.sleep(state.delay)
                body = state.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                start, wanted = 0, self.headers.get("Range")
                if wanted and state.ranges and self.headers.get("If-Range") == etag:
                    start = int(wanted.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                chunk = body[start:]
                self.send_header("Content-Length", str(len(chunk)))
                self.send_header("ETag", etag)
                self.end_headers()
                if state.truncate > 0:  # announce the whole length, send half, close (HTTP/1.0)
                    state.truncate -= 1
                    chunk = chunk[: len(chunk) // 2]
                self.wfile.write(chunk)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def gets(self, path: str) -> list[str | None]:
        """The Range header of every request for ``path``."""
        return [r for p, r in self.requests if p == path]


@pytest.fixture
def server():
    srv = FileServer()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("VLMO_CACHE", str(root))
    monkeypatch.delenv("VLMO_OFFLINE", raising=False)
    monkeypatch.delenv("VLMO_PRETRAINED_BASE_URL", raising=False)
    monkeypatch.setattr(pretrained, "RETRY_WAIT_S", 0.0)
    for variable in ("http_proxy", "HTTP_PROXY"):  # a proxy nobody listens on: loopback must bypass it
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    return root


@pytest.fixture(scope="module")
def official_bytes(official_tiny) -> bytes:
    """The official reference's tiny weights as the released files hold them: under ``state_dict``."""
    buffer = io.BytesIO()
    torch.save({"state_dict": official_tiny["state_dict"]}, buffer)
    return buffer.getvalue()


@pytest.fixture
def tiny_entry(server, cache, official_bytes):
    server.files["/files/vlmo_tiny_patch16_32.pt"] = official_bytes
    entry = register_pretrained(NAME, server.url("/files/vlmo_tiny_patch16_32.pt"), size="tiny", image_size=32,
                                task="vl-pretrain", source="the official code's tiny reference (test)")
    yield entry
    unregister_pretrained(NAME)


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(v, sb[k]) for k, v in sa.items())


# ---------------------------------------------------------------------- the registry
def test_official_names_follow_one_scheme_and_the_readme_files():
    names = list_pretrained()
    official = [n for n in names if find_pretrained(n).url.startswith(pretrained.OFFICIAL_BASE_URL)]
    assert len(official) == 18  # 3 sizes x (stage 3, stage 2, VQA, NLVR2, COCO, F30K)
    scheme = re.compile(r"vlmo-(base|base-plus|large)-patch16(-(stage2|vqa|nlvr2|coco-retrieval|f30k-retrieval))?")
    for name in official:
        entry = get_pretrained(name)
        assert scheme.fullmatch(name), name
        assert entry.url.startswith("https://github.com/wenhui0924/vlmo_ckpts/releases/download/vlmo/vlmo_")
        # the file name spells the size and resolution the entry declares
        assert entry.filename.startswith(f"vlmo_{entry.size}_patch16_{entry.image_size}"), entry
        assert entry.file_size is None and entry.sha256 is None  # not published: Content-Length is checked
        assert "vlmo/README.md" in entry.source and pretrained.UNILM_COMMIT[:7] in entry.source
    coco = get_pretrained("vlmo-base-patch16-coco-retrieval")
    assert (coco.size, coco.image_size, coco.task) == ("base", 384, "coco-retrieval")
    assert coco.url.endswith("/vlmo_base_patch16_384_coco.pt") and "74.8" in coco.reported
    vqa = get_pretrained("vlmo-large-patch16-vqa")
    assert (vqa.size, vqa.image_size, vqa.filename) == ("large", 480, "vlmo_large_patch16_480_vqa.pt")
    assert find_pretrained("VLMo_Base_Plus_Patch16_NLVR2").name == "vlmo-base-plus-patch16-nlvr2"

    table = str(names)  # printed (or echoed in a REPL) the names are the table
    assert repr(names) == table and isinstance(names, list)
    for name in official:
        assert name in table
    assert pretrained.OFFICIAL_BASE_URL in table and "Content-Length" in table


def test_eval_list_pretrained_prints_the_table(capsys):
    from vlmo_composer.evaluation.cli import main as eval_main

    assert eval_main(["--list-pretrained"]) == 0
    out = capsys.readouterr().out
    assert "vlmo-base-patch16-coco-retrieval" in out and "vlmo_base_patch16_384_coco.pt" in out


def test_unknown_names_fail_in_one_line_with_the_close_names(cache):
    with pytest.raises(UnknownPretrainedName) as err:
        VLMoInference.from_pretrained("vlmo-base-patch16-coco-retreival")
    message = str(err.value)
    assert "vlmo-base-patch16-coco-retrieval" in message and "\n" not in message
    # an official file name that is not on disk points at its name
    with pytest.raises(FileNotFoundError, match="vlmo_base_patch16_384_coco.pt not found; close names: "
                                                "vlmo-base-patch16-coco-retrieval"):
        local_copy("vlmo_base_patch16_384_coco.pt")
    with pytest.raises(UnknownPretrainedName, match="not a pretrained name"):
        get_pretrained("vlmo-huge")


# ---------------------------------------------------------------------- download, cache, load
def test_download_loads_and_the_cache_answers_the_second_time(tiny_entry, server, cache, official_tiny,
                                                                official_bytes):
    path = "/files/vlmo_tiny_patch16_32.pt"
    model = VLMoInference.from_pretrained(NAME)  # no size=: the name knows it
    expected = load_official(official_tiny["state_dict"], "tiny")
    assert same_weights(model.model, expected)
    assert model.config.image_size == 32 and model.config.hidden_size == 64
    assert server.gets(path) == [None]

    target = cache_path(tiny_entry.url)
    assert target == cache / f"127.0.0.1_{server.httpd.server_address[1]}" / "files" / "vlmo_tiny_patch16_32.pt"
    assert target.read_bytes() == official_bytes
    record = json.loads(target.with_name(target.name + ".json").read_text())
    assert record["size"] == len(official_bytes)
    assert record["sha256"] == hashlib.sha256(official_bytes).hexdigest()
    assert not list(target.parent.glob("*.part"))

    again = VLMoInference.from_pretrained(NAME)
    assert same_weights(again.model, expected)
    assert local_copy(NAME) == str(target)
    assert server.gets(path) == [None]  # one request in all
    assert "cached" in next(line for line in str(list_pretrained()).splitlines() if line.startswith(NAME))


@pytest.mark.parametrize("ranges", [True, False], ids=["resumed", "restarted"])
def test_a_truncated_download_is_refused_and_retried(tiny_entry, server, official_bytes, ranges):
    path = "/files/vlmo_tiny_patch16_32.pt"
    server.truncate, server.ranges = 1, ranges
    target = download_pretrained(NAME)
    assert target.read_bytes() == official_bytes
    half = len(official_bytes) // 2
    assert server.gets(path) == [None, f"bytes={half}-"]  # the second asks for the rest...
    # ...and gets it (206) or, from a server without ranges, the whole file again (200)


def test_a_download_that_stays_truncated_fails_naming_the_file(tiny_entry, server, official_bytes):
    server.truncate = 99
    with pytest.raises(DownloadError) as err:
        VLMoInference.from_pretrained(NAME)
    target = cache_path(tiny_entry.url)
    message = str(err.value)
    assert tiny_entry.url in message and str(target) in message and "failed 3 times" in message
    assert f"of {len(official_bytes)} bytes arrived" in message
    assert not target.exists()  # an interrupted download is never used
    assert len(server.requests) == 3


def test_a_wrong_size_cached_file_is_named_and_replaced(tiny_entry, server, official_bytes, monkeypatch):
    path = "/files/vlmo_tiny_patch16_32.pt"
    target = download_pretrained(NAME)
    target.write_bytes(official_bytes[:1000])  # e.g. cut by a full disk or a copy
    with pytest.warns(UserWarning, match=re.escape(f"{target} is 1000 bytes but {len(official_bytes)} were "
                                                   "downloaded: downloading it again")):
        model = VLMoInference.from_pretrained(NAME)
    assert target.read_bytes() == official_bytes and len(server.gets(path)) == 2
    assert model.config.hidden_size == 64

    target.write_bytes(official_bytes[:1000])
    monkeypatch.setenv("VLMO_OFFLINE", "1")
    with pytest.raises(DownloadError, match=re.escape(f"{target} is 1000 bytes but")):
        download_pretrained(NAME)
    monkeypatch.delenv("VLMO_OFFLINE")
    del server.files[path]  # the server lost it: the error names the file in the cache and why it was not used
    with pytest.raises(DownloadError, match=rf"HTTP 404.*{re.escape(str(target))} is 1000 bytes"):
        with pytest.warns(UserWarning):
            download_pretrained(NAME)
    assert len(server.gets(path)) == 3


def test_known_size_and_sha256_are_checked(server, cache, official_bytes):
    server.files["/f.pt"] = official_bytes
    digest = hashlib.sha256(official_bytes).hexdigest()
    url = server.url("/f.pt")
    try:
        register_pretrained("test-size", url, "tiny", 32, file_size=len(official_bytes) + 1)
        with pytest.raises(DownloadError, match=rf"sends {len(official_bytes)} bytes but the registry says"):
            download_pretrained("test-size")
        assert not cache_path(url).exists()
        register_pretrained("test-sha", url, "tiny", 32, sha256="0" * 64)
        with pytest.raises(DownloadError, match=f"sha256 {digest} is not the registry's"):
            download_pretrained("test-sha")
        assert not cache_path(url).exists()
        register_pretrained("test-good", url, "tiny", 32, file_size=len(official_bytes), sha256=digest)
        target = download_pretrained("test-good")
        flipped = bytearray(official_bytes)
        flipped[-1] ^= 1  # same size, other bytes
        target.write_bytes(bytes(flipped))
        with pytest.warns(UserWarning, match="does not have the registry's sha256"):
            assert download_pretrained("test-good").read_bytes() == official_bytes
    finally:
        for name in ("test-size", "test-sha", "test-good"):
            unregister_pretrained(name)


def test_https_urls_are_sources_cached_the_same_way(server, cache, official_bytes, official_tiny):
    server.files["/direct/official.pt"] = official_bytes
    url = server.url("/direct/official.pt")
    first = VLMoInference.from_pretrained(url, size="tiny")
    second = VLMoInference.from_pretrained(url, size="tiny")
    assert same_weights(first.model, second.model)
    assert same_weights(first.model, load_official(official_tiny["state_dict"], "tiny"))
    assert len(server.requests) == 1
    with pytest.raises(DownloadError, match="https:// only"):
        local_copy("http://example.com/vlmo.pt")  # refused before any connection
    with pytest.raises(ValueError, match=r"ftp://example.com/vlmo.pt: weights are read from .*hf-hub:ORG/NAME, "
                                         r"https://, s3://, gs://, azure://, oci://, hf://datasets/, "
                                         r"dbfs:/Volumes/ only"):
        local_copy("ftp://example.com/vlmo.pt")
    with pytest.raises(DownloadError, match="https:// only"):
        register_pretrained("test-plain-http", "http://example.com/vlmo.pt", "tiny", 32)


def test_a_mirror_serves_the_official_names(server, cache, monkeypatch, official_bytes):
    server.files["/mirror/vlmo_base_patch16_384_coco.pt"] = official_bytes
    monkeypatch.setenv("VLMO_PRETRAINED_BASE_URL", server.url("/mirror/"))
    target = download_pretrained("vlmo-base-patch16-coco-retrieval")
    assert target.read_bytes() == official_bytes
    assert server.requests == [("/mirror/vlmo_base_patch16_384_coco.pt", None)]
    assert "served from" in str(list_pretrained())
    monkeypatch.setenv("VLMO_PRETRAINED_BASE_URL", "http://mirror.example.com/vlmo/")
    with pytest.raises(DownloadError, match="VLMO_PRETRAINED_BASE_URL=http://mirror.example.com/vlmo/"):
        download_pretrained("vlmo-base-patch16-coco-retrieval")


def test_an_unwritable_cache_says_so(tiny_entry, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    monkeypatch.setenv("VLMO_CACHE", str(blocker / "cache"))
    with pytest.raises(DownloadError, match=r"cache folder .*a_file/cache/.* cannot be written.*VLMO_CACHE"):
        download_pretrained(NAME)


def test_concurrent_loads_download_once_and_a_stale_part_is_not_used(tiny_entry, server, official_bytes):
    path = "/files/vlmo_tiny_patch16_32.pt"
    target = cache_path(tiny_entry.url)
    target.parent.mkdir(parents=True)
    target.with_name(target.name + ".part").write_bytes(b"PK\x03\x04 left by a killed run")  # no resume record
    server.delay = 0.3
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(download_pretrained(NAME))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [target] * 3 and target.read_bytes() == official_bytes
    assert server.gets(path) == [None]  # one download, from the start


# ---------------------------------------------------------------------- eval.py --weights and init_from by name
@pytest.fixture
def small_entry(server, cache, tmp_path):
    """An official-layout file of the quick-start model, registered under a name."""
    from vlmo_composer.training.builders import build_task, resolve_config
    from vlmo_composer.training.config import load_config

    cfg = load_config(QUICKSTART, ["variables.data=unused"])
    torch.manual_seed(0)
    model = build_task(resolve_config(cfg)).model
    save_official(model, tmp_path / "small.pt")
    server.files["/small.pt"] = (tmp_path / "small.pt").read_bytes()
    entry = register_pretrained("test-vlmo-small", server.url("/small.pt"), "small", 64)
    yield entry, model
    unregister_pretrained(entry.name)


def test_eval_weights_and_init_from_take_a_name(small_entry, server, synthetic_data, capsys):
    from vlmo_composer.evaluation.cli import main as eval_main
    from vlmo_composer.training.builders import build_task, resolve_config
    from vlmo_composer.training.config import load_config

    entry, model = small_entry
    data = f"variables.data={synthetic_data}"
    assert eval_main([QUICKSTART, data, "--weights", entry.name, "--dry-run"]) == 0
    assert f"{entry.name} (small, 64 px, custom) = {entry.url} (downloaded on first use to" in capsys.readouterr().out
    assert server.requests == []  # a dry run downloads nothing

    assert eval_main([QUICKSTART, data, "--weights", entry.name.replace("small", "smal")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"close names: {entry.name}" in err  # one line, naming the close name

    assert eval_main([QUICKSTART, data, "--weights", entry.name]) == 0
    out = capsys.readouterr().out
    assert "image-text retrieval" in out and f"weights: official weights {cache_path(entry.url)}" in out
    assert len(server.requests) == 1

    init = ["task.init_from.kind=official", f"task.init_from.path={entry.name}"]
    task = build_task(resolve_config(load_config(QUICKSTART, [data, *init])))
    assert same_weights(task.model, model)
    assert len(server.requests) == 1  # the cache served it

    from vlmo_composer.training.dry_run import train_summary

    assert f"init_from: official weights from {entry.name} (small, 64 px, custom)" in train_summary(
        load_config(QUICKSTART, [data, "global_train_batch_size=8", *init]), QUICKSTART)
    with pytest.raises(Exception, match=f"{entry.name} is a pretrained official checkpoint: use kind 'official'"):
        build_task(resolve_config(load_config(QUICKSTART, [data, "task.init_from.kind=composer",
                                                           f"task.init_from.path={entry.name}"])))
