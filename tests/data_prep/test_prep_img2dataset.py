"""From a url list to training on one cluster: img2dataset on Spark -> object store -> convert on Spark -> train.

The flow ``data_prep/README.md`` documents ("A url list to shards on one cluster"), on the suite's
one Spark local session: img2dataset's pyspark distributor downloads a CC3M-style url list from a
local HTTP server (broken urls and a corrupt image included) and writes its webdataset tars
straight to an object store (Azurite, through fsspec's ``adlfs``; s3fs cannot be installed beside
our botocore), ``convert_webdataset.py --engine spark`` reads them from there, and a 2-step run
trains on the shards. Every url of the list is accounted for in the conversion report.
"""

from __future__ import annotations

import io
import json
import contextlib
import os
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from PIL import Image

from training.helpers import SMALL_MODEL, cpu_run_config, in_memory_logger

from data_prep import convert_webdataset

SIDE = 32  # img2dataset --image_size and convert_cc.py --max-image-side
COLOURS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}


def picture(colour: str, size: tuple[int, int], fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, COLOURS[colour]).save(out, format=fmt)
    return out.getvalue()


# Paths share file names ("1.jpg") as real url lists do; each serves one colour, or fails.
ROUTES = {
    "/a/1.jpg": (200, "image/jpeg", picture("red", (48, 24), "JPEG")),  # downscaled to 32x16
    "/b/1.jpg": (200, "image/png", picture("green", (16, 16), "PNG")),  # small: kept at 16x16
    "/c/photo.jpg": (200, "image/jpeg", picture("blue", (20, 40), "JPEG")),  # downscaled to 16x32
    "/d/1.jpg": (404, "text/html", b"<html>not here</html>"),
    "/e/slow.jpg": (200, "image/jpeg", picture("red", (8, 8), "JPEG")),  # answers after the timeout
    "/f/page.jpg": (200, "text/html", b"<html>an html page, not an image</html>"),
    "/g/broken.jpg": (200, "image/jpeg", picture("green", (16, 16), "JPEG")[:40]),  # a corrupt jpeg
}
SLOW_S = 3.0


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        status, kind, body = ROUTES.get(self.path, (404, "text/plain", b"no"))
        if self.path == "/e/slow.jpg":
            time.sleep(SLOW_S)
        try:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up (the timeout case)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def image_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def dominant(image_bytes: bytes) -> str:
    with Image.open(io.BytesIO(image_bytes)) as image:
        r, g, b = image.convert("RGB").getpixel((image.width // 2, image.height // 2))
    return {0: "red", 1: "green", 2: "blue"}[max(range(3), key=lambda i: (r, g, b)[i])]


@contextlib.contextmanager
def executor_env(spark, variables: Mapping[str, str]) -> Iterator[None]:
    """The store's variables in the Spark tasks of this block (``spark.executorEnv.*`` on a cluster).

    The shared session's executors started before this test's store did; Spark sends
    ``SparkContext.environment`` with every job it starts, as it does the ``executorEnv`` settings.
    """
    saved = dict(spark.sparkContext.environment)
    spark.sparkContext.environment.update(variables)
    try:
        yield
    finally:
        spark.sparkContext.environment.clear()
        spark.sparkContext.environment.update(saved)


@pytest.mark.slow
def test_url_list_on_spark_to_store_to_shards_to_training(image_server: str, spark, azure_container: str,
                                                          tmp_path: Path, read_mds, capsys,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_ALBUMENTATIONS_UPDATE", "1")  # img2dataset imports albumentations: no update check
    pytest.importorskip("img2dataset", reason="needs the 'download' extra (pip install -e '.[download]')")
    pytest.importorskip("adlfs", reason="needs the 'download' extra's adlfs (img2dataset writes to azure through it)")
    import fsspec
    from img2dataset import download
    from pyspark.sql import SparkSession

    from vlmo_composer import stores

    captions = {"/a/1.jpg": "a red wall", "/b/1.jpg": "un carré vert, 緑", "/c/photo.jpg": "a blue door",
                "/d/1.jpg": "lost: 404", "/e/slow.jpg": "lost: too slow", "/f/page.jpg": "lost: not an image",
                "/g/broken.jpg": "lost: a corrupt jpeg"}
    # Google's CC3M tsv (caption<TAB>url) with the recipe's header line.
    tsv = tmp_path / "cc3m.tsv"
    tsv.write_text("caption\turl\n" + "".join(f"{c}\t{image_server}{p}\n" for p, c in captions.items()),
                   encoding="utf-8")
    assert SparkSession.getActiveSession() is not None  # img2dataset joins it (and does not stop it)
    output = f"az://{azure_container}/cc3m"
    # img2dataset removes its "_tmp" folder at the end; on a flat blob store that folder vanishes with
    # its last file (img2dataset skips the removal on s3 only), so a placeholder keeps it (README).
    with fsspec.open(f"{output}/_tmp/.keep", "wb"):
        pass
    with executor_env(spark, {k: os.environ[k] for k in ("AZURE_STORAGE_CONNECTION_STRING",
                                                         "NO_ALBUMENTATIONS_UPDATE")}):
        download(url_list=str(tsv), input_format="tsv", url_col="url", caption_col="caption",
                 output_format="webdataset", output_folder=output, distributor="pyspark",
                 processes_count=2, thread_count=8, number_sample_per_shard=4, image_size=SIDE,
                 resize_mode="keep_ratio_largest", resize_only_if_bigger=True, timeout=1, retries=0,
                 enable_wandb=False)
        store, _ = stores.open_store(f"azure://{azure_container}")
        listed = sorted(k for k in store.list("cc3m/") if not k.startswith("cc3m/_"))
        assert [k for k in listed if k.endswith(".tar")] == ["cc3m/00000.tar", "cc3m/00001.tar"]
        stats = [json.loads(store.read_bytes(k)) for k in listed if k.endswith("_stats.json")]
        assert len(stats) == 2 and sum(s["count"] for s in stats) == len(captions)

        mds = tmp_path / "mds"
        (report,) = convert_webdataset.main(["--tars", f"azure://{azure_container}/cc3m", "--source", "cc3m",
                                             "--engine", "spark", "--max-image-side", str(SIDE),
                                             "--out", str(mds), "--no-progress"])
    assert report.groups == 2  # one per tar
    written = json.loads((mds / "conversion_report.json").read_text(encoding="utf-8"))
    skipped = {reason: entry["count"] for reason, entry in written["skipped"].items()}
    # every url: img2dataset's successes were written, its failures are the report's skipped rows
    assert written["records"] == len(captions) == written["samples_written"] + sum(skipped.values())
    assert written["samples_written"] == sum(s["successes"] for s in stats) == 3
    assert skipped == {"download_failed": sum(s["failed_to_download"] for s in stats),
                       "resize_failed": sum(s["failed_to_resize"] for s in stats)} == \
        {"download_failed": 2, "resize_failed": 2}
    messages = written["skipped"]["download_failed"]["details"]
    assert any("404" in m for m in messages) and any("timed out" in m.lower() for m in messages)

    rows = read_mds(mds)
    got = sorted((r["captions"][0], dominant(r["image"]), (r["width"], r["height"])) for r in rows)
    assert got == [("a blue door", "blue", (16, 32)), ("a red wall", "red", (32, 16)),
                   ("un carré vert, 緑", "green", (16, 16))]

    # a store input that cannot be read: one line naming it, exit 2
    capsys.readouterr()
    assert convert_webdataset.CONVERTER.cli(["--tars", "azure://no-such-container/cc3m", "--out",
                                             str(tmp_path / "none"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: azure://no-such-container/cc3m: container 'no-such-container' does not exist")
    assert len(err.splitlines()) == 1 and not (tmp_path / "none").exists()

    from vlmo_composer.training.train import build_trainer

    dataset = dict(local=str(mds), image_size=64, max_text_len=32, randaugment=False, hflip=False)
    trainer = build_trainer(cpu_run_config(tmp_path / "run", {
        "run_name": "test-img2dataset", "seed": 7, "task": {"name": "vl_pretrain", "model": dict(SMALL_MODEL)},
        "train_loader": {"name": "image_text", "dataset": dataset, "num_workers": 0},
        "optimizer": {"name": "adamw", "lr": 1e-3}, "scheduler": {"name": "linear_decay_with_warmup", "t_warmup": "1ba"},
        "max_duration": "2ba", "global_train_batch_size": 2,
        "loggers": {"in_memory": {}}, "save_interval": "2ba"}))
    trainer.fit()
    losses = in_memory_logger(trainer).data["loss/train/total"]
    assert len(losses) == 2 and all(torch.isfinite(torch.as_tensor(v)) for _, v in losses)
    trainer.close()
