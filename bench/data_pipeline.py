"""Data pipeline benchmark: conversion throughput and the training read path.

    python bench/data_pipeline.py [--images 300] [--width 640 --height 480]

Builds a folder of photo-like JPEGs (COCO-sized by default) described by a
Karpathy-style json, then measures, in one process (so numbers are per worker):

* conversion (``convert_karpathy``, zstd shards): keeping the original bytes
  (full decode check) and downscaling to ``--max-side``, against just reading
  the same files;
* the training read path: Streaming read + decode + the train transform
  (RandomResizedCrop, flip, RandAugment) to a 224 tensor, with and without JPEG
  draft-mode decoding, against a bare PIL decode + resize of the same files.

It prints a markdown table (paste it into bench/RESULTS.md) and the number of
cores per GPU the read path needs to feed one H200 at the measured VLMo-Base
stage-3 rate (bench/../shared GPU notes: ~175 samples/s).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

GPU_SAMPLES_PER_S = 175.0  # VLMo-Base stage 3 on one H200 at batch 128 (measured with the official code)


def photo_like(rng: np.random.Generator, width: int, height: int) -> bytes:
    """A JPEG with photo-like statistics: smooth regions, edges and sensor noise (quality 90)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = (x / width * rng.uniform(0.3, 1) + y / height * rng.uniform(0.3, 1))[..., None] / 2
    image = Image.fromarray((c0 * (1 - t) + c1 * t).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(60):
        x0, y0 = rng.uniform(-0.2, 1, 2) * (width, height)
        w, h = rng.uniform(0.02, 0.4, 2) * (width, height)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x0 + w, y0 + h), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    image = image.filter(ImageFilter.GaussianBlur(1.0))
    # noise sets the entropy: at 640x480 the files average ~140 KiB, near COCO's ~160 KiB
    pixels = np.asarray(image).astype(np.float32) + rng.normal(0, 16, (height, width, 3))
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, format="JPEG", quality=90)
    return out.getvalue()


def make_inputs(root: Path, count: int, width: int, height: int) -> tuple[Path, list[Path]]:
    rng = np.random.default_rng(0)
    paths, entries = [], []
    for i in range(count):
        name = f"{i:06d}.jpg"
        path = root / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(photo_like(rng, width, height))
        paths.append(path)
        entries.append({"filename": name, "split": "train", "sentences": [{"raw": f"image {i}"}]})
    json_path = root / "dataset_flickr30k.json"
    json_path.write_text(json.dumps({"images": entries}))
    return json_path, paths


def rate(count: int, fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return count / (time.perf_counter() - start)


def convert(json_path: Path, images: Path, out: Path, workers: int, *extra: str) -> None:
    from data_prep import convert_karpathy

    with contextlib.redirect_stdout(io.StringIO()):
        convert_karpathy.main(["--dataset", "f30k", "--json", str(json_path), "--images", str(images),
                               "--out", str(out), "--num-workers", str(workers), "--group-size", "50",
                               "--no-progress", *extra])


def read_path(dataset: Path, cache: Path, draft: bool, limit: int) -> float:
    """Samples/s of Streaming read + decode + train transform to a 224 tensor, in this process."""
    from streaming import StreamingDataset

    from vlmo_composer.data.images import decode_image
    from vlmo_composer.data.transforms import build_image_transform

    transform = build_image_transform(224, train=True)
    ds = StreamingDataset(remote=str(dataset), local=str(cache), shuffle=False, batch_size=1)
    n = min(limit, ds.num_samples)
    for i in range(n):  # first pass copies shards into the cache: keep it out of the timing
        ds[i]
    rng = np.random.default_rng(0)

    def run() -> None:
        for i in range(n):
            image = decode_image(ds[i]["image"], draft_size=transform.draft_size if draft else None)
            tensor = transform(image, rng)
            assert tensor.shape == (3, 224, 224)

    return rate(n, run)


def bare_pil(paths: list[Path], draft: bool) -> float:
    def run() -> None:
        for path in paths:
            with Image.open(path) as image:
                if draft:
                    image.draft("RGB", (224, 224))
                image.convert("RGB").resize((224, 224), Image.Resampling.BICUBIC)

    return rate(len(paths), run)


def kib_per_image(out: Path, paths: list[Path]) -> float:
    shards = (out / "train").rglob("*.mds*")
    return sum(p.stat().st_size for p in shards) / len(paths) / 1024


def read_files(paths: list[Path]) -> float:
    return rate(len(paths), lambda: [p.read_bytes() for p in paths])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--max-side", type=int, default=384, help="--max-image-side of the resize conversion")
    parser.add_argument("--read-samples", type=int, default=300, help="samples timed on the read path")
    args = parser.parse_args(argv)

    import PIL
    import streaming
    import torch

    cores = os.cpu_count() or 1
    torch.set_num_threads(1)  # one worker = one core, as in a DataLoader worker
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        root = Path(tmp)
        json_path, paths = make_inputs(root, args.images, args.width, args.height)
        mean_kb = sum(p.stat().st_size for p in paths) / len(paths) / 1024
        images = root / "images"
        for path in paths:  # warm the page cache so every row reads from memory
            path.read_bytes()
        rows: list[tuple[str, float, float]] = [
            ("read the files (bytes only)", read_files(paths), mean_kb),
            ("convert, keep bytes (full decode check)",
             rate(len(paths), lambda: convert(json_path, images, root / "keep", 1)),
             kib_per_image(root / "keep", paths)),
            (f"convert, downscale to {args.max_side} + JPEG q95",
             rate(len(paths), lambda: convert(json_path, images, root / "resized", 1,
                                              "--max-image-side", str(args.max_side))),
             kib_per_image(root / "resized", paths)),
        ]
        read_rows: list[tuple[str, float]] = [
            ("bare PIL: decode + resize 224 (files)", bare_pil(paths, draft=False)),
            ("bare PIL: draft decode + resize 224 (files)", bare_pil(paths, draft=True)),
            ("Streaming + decode + train transform 224", read_path(root / "keep" / "train", root / "c1", False,
                                                                    args.read_samples)),
            ("Streaming + draft decode + train transform 224", read_path(root / "keep" / "train", root / "c2",
                                                                          True, args.read_samples)),
            (f"Streaming ({args.max_side} px shards) + decode + train transform 224",
             read_path(root / "resized" / "train", root / "c3", True, args.read_samples)),
        ]

    print(f"# Data pipeline ({time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"{cores} cores, Python {platform.python_version()}, Pillow {PIL.__version__}, "
          f"torch {torch.__version__}, streaming {streaming.__version__})")
    print(f"\n{args.images} photo-like JPEGs, {args.width}x{args.height}, quality 90, mean {mean_kb:.0f} KiB\n")
    print("| conversion (one worker) | images/s per worker | KiB per image |\n|---|---|---|")
    for name, value, kib in rows:
        print(f"| {name} | {value:,.0f} | {kib:,.0f} |")
    print("\n| training read path (one worker) | samples/s per worker | cores per H200 at "
          f"{GPU_SAMPLES_PER_S:.0f} samples/s |\n|---|---|---|")
    for name, value in read_rows:
        print(f"| {name} | {value:,.0f} | {GPU_SAMPLES_PER_S / value:.1f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
