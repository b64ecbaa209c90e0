"""Tiny images and MDS shards (written with the schema's columns) for the data tests."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image
from streaming import MDSWriter

from vlmo_composer.data.schema import Schema


def image_bytes(width: int = 32, height: int = 24, seed: int = 0, fmt: str = "JPEG") -> bytes:
    """A smooth random image (gradients plus noise, so crops and flips change pixels), encoded."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = (
        rng.uniform(0, 255, 3) + rng.uniform(-3, 3, 3) * xx[..., None] + rng.uniform(-3, 3, 3) * yy[..., None]
    )
    pixels = np.clip(base + rng.normal(0, 8, (height, width, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    return buf.getvalue()


def write_mds(out: Path, schema: Schema, rows: Iterable[dict], size_limit: int = 1 << 14) -> Path:
    """Write rows (checked against the schema) as MDS shards; small shards so there are several."""
    with MDSWriter(out=str(out), columns=dict(schema.columns), size_limit=size_limit) as writer:
        for row in rows:
            schema.validate(row)
            writer.write(row)
    return out
