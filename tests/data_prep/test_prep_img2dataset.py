"""From a url list to training: img2dataset itself downloads from a local server, then convert, then train.

The commands are the ones ``data_prep/README.md`` documents (img2dataset's CC3M recipe from
``dataset_examples/cc3m.md``, with ``--resize_mode keep_ratio_largest --resize_only_if_bigger``
matching ``--max-image-side``), run as a user runs them.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from PIL import Image

from training.helpers import SMALL_MODEL, cpu_run_config, in_memory_logger

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


@pytest.mark.slow
def test_url_list_to_img2dataset_to_shards_to_training(image_server: str, tmp_path: Path, read_mds) -> None:
    pytest.importorskip("img2dataset", reason="needs the 'download' extra (pip install -e '.[download]')")
    img2dataset = shutil.which("img2dataset", path=str(Path(sys.executable).parent))
    assert img2dataset, "the img2dataset command is not installed next to this python"
    captions = {"/a/1.jpg": "a red wall", "/b/1.jpg": "un carré vert, 緑", "/c/photo.jpg": "a blue door",
                "/d/1.jpg": "lost: 404", "/e/slow.jpg": "lost: too slow", "/f/page.jpg": "lost: not an image"}
    # Google's CC3M tsv (caption<TAB>url, no header), then the recipe's header step
    # (sed -i '1s/^/caption\turl\n/' cc3m.tsv).
    tsv = tmp_path / "cc3m.tsv"
    tsv.write_text("".join(f"{c}\t{image_server}{p}\n" for p, c in captions.items()), encoding="utf-8")
    tsv.write_text("caption\turl\n" + tsv.read_text(encoding="utf-8"), encoding="utf-8")
    downloads = tmp_path / "cc3m"
    subprocess.run([img2dataset, "--url_list", str(tsv), "--input_format", "tsv", "--url_col", "url",
                    "--caption_col", "caption", "--output_format", "webdataset", "--output_folder", str(downloads),
                    "--processes_count", "1", "--thread_count", "8", "--image_size", str(SIDE),
                    "--resize_mode", "keep_ratio_largest", "--resize_only_if_bigger", "True",
                    "--timeout", "1", "--retries", "0", "--enable_wandb", "False"],
                   check=True, capture_output=True, timeout=300,
                   env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})  # no update check over the network
    assert sorted(p.name for p in downloads.glob("00000*")) == ["00000.parquet", "00000.tar", "00000_stats.json"]

    mds = tmp_path / "mds"
    subprocess.run([sys.executable, "data_prep/convert_cc.py", "--variant", "cc3m", "--tars", str(downloads),
                    "--split", "train", "--max-image-side", str(SIDE), "--out", str(mds), "--no-progress",
                    "--num-workers", "1"], check=True, capture_output=True, timeout=120,
                   cwd=Path(__file__).resolve().parents[2])
    report = json.loads((mds / "train" / "conversion_report.json").read_text(encoding="utf-8"))
    skipped = {reason: entry["count"] for reason, entry in report["skipped"].items()}
    assert report["records"] == len(captions) == report["samples_written"] + sum(skipped.values())
    assert skipped == {"download_failed": 2, "resize_failed": 1}
    messages = report["skipped"]["download_failed"]["details"]
    assert sum(messages.values()) == 2 and any("404" in m for m in messages)
    assert any("timed out" in m.lower() for m in messages)

    rows = read_mds(mds / "train")
    got = sorted((r["captions"][0], dominant(r["image"]), (r["width"], r["height"])) for r in rows)
    assert got == [("a blue door", "blue", (16, 32)), ("a red wall", "red", (32, 16)),
                   ("un carré vert, 緑", "green", (16, 16))]

    from vlmo_composer.training.train import build_trainer

    dataset = dict(local=str(mds / "train"), image_size=64, max_text_len=32, randaugment=False, hflip=False)
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
