"""Check, and optionally downscale, the image bytes that go into a shard.

By default the original file bytes are stored untouched (no generation loss,
no work), after a full decode proves they are readable: ``Image.verify()``
misses truncated files, ``load()`` does not. With ``max_side`` larger images
are downscaled (aspect kept) and re-encoded as quality-95 RGB JPEG, which
makes shards smaller and the training read path cheaper.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from data_prep import inputs
from data_prep.common import SkipRecord

JPEG_QUALITY = 95


@dataclass(frozen=True)
class StoredImage:
    data: bytes
    width: int
    height: int


def read_file_bytes(path: str) -> bytes:
    """The bytes of an image file (local or on a store); a missing or unreadable file skips the record."""
    try:
        data = inputs.read_bytes(path)
    except (IsADirectoryError, PermissionError) as e:
        raise SkipRecord("unreadable_image", str(e)) from None
    if data is None:
        raise SkipRecord("missing_image")
    return data


def prepare_image(data: bytes, max_side: int | None = None) -> StoredImage:
    """Decode ``data`` fully and return what to store, or raise :class:`SkipRecord`."""
    if not data:
        raise SkipRecord("empty_image_file")
    try:
        with warnings.catch_warnings():
            # Same limits as the training decoder: PIL's bomb warning is noise, its error is not.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if max_side is not None and max(width, height) > max_side:
                return _downscale(image, max_side)
            image.load()
    except Image.DecompressionBombError:
        raise SkipRecord("image_too_large") from None
    except UnidentifiedImageError:
        raise SkipRecord("corrupt_image", "not a recognised image format") from None
    except Exception as e:  # PIL raises many types for bad files (OSError, SyntaxError, ...)
        raise SkipRecord("corrupt_image", f"{type(e).__name__}: {e}") from None
    return StoredImage(data, width, height)


def _downscale(image: Image.Image, max_side: int) -> StoredImage:
    width, height = image.size
    scale = max_side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # JPEG DCT scaling decodes at >= 2x the target size; the Lanczos resize
    # below does the rest, so quality matches a full decode at a fraction of the cost.
    image.draft("RGB", (size[0] * 2, size[1] * 2))
    image = image.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return StoredImage(out.getvalue(), size[0], size[1])


def load_image(path: str, max_side: int | None = None) -> StoredImage:
    return prepare_image(read_file_bytes(path), max_side)
