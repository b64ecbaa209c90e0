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


def make_coco_like(root: Path, count: int) -> tuple[Path, Path]:
    """A Karpathy-style json over ``count`` train images, every 7th corrupt and every 11th missing."""
    entries = []
    for i in range(count):
        name = f"COCO_train2014_{i:012d}.jpg"
        if i % 11 != 10:
            write(root / "coco" / "train2014" / name, corrupt_jpeg() if i % 7 == 6 else image_bytes(12 + i % 5, 10, i))
        entries.append({"filepath": "train2014", "filename": name, "split": "train", "cocoid": i,
                        "sentences": [{"raw": f"caption {i} one"}, {"raw": f"caption {i} two"}]})
    json_path = write_json(root / "dataset_coco.json", {"images": entries})
    return json_path, root / "coco"


def dataset_files(root: Path) -> dict[str, bytes]:
    """Every file of a written dataset except the run-specific report (it holds timings)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "conversion_report.json"}
