"""Small builders for fixture files in each raw format, including broken ones."""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path
from typing import Any

from PIL import Image


def image_bytes(width: int, height: int, seed: int, fmt: str = "JPEG") -> bytes:
    """A noisy image (noise keeps PNGs large enough to truncate meaningfully)."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", (width, height), bytes(rng.randrange(256) for _ in range(width * height * 3)))
    out = io.BytesIO()
    image.save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


def corrupt_jpeg() -> bytes:
    """A JPEG marker followed by garbage: recognised as JPEG, not decodable."""
    return b"\xff\xd8\xff\xe0" + b"this is not image data" * 20


def truncated_png(seed: int = 0) -> bytes:
    """A real PNG cut in half: the header opens fine, the full decode fails."""
    data = image_bytes(32, 32, seed, "PNG")
    return data[: len(data) // 2]


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def write_json(path: Path, obj: Any) -> Path:
    return write(path, json.dumps(obj))


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def decoded_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.size


def report_counts(report: Any, kind: str = "skipped") -> dict[str, int]:
    log = getattr(report, kind)
    return {reason: entry.count for reason, entry in log.reasons.items()}
