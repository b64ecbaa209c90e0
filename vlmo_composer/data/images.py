"""Decoding the encoded image bytes stored in MDS shards.

JPEG draft mode. A JPEG can be decoded at 1/2, 1/4 or 1/8 scale by the DCT
itself, which is several times cheaper than a full decode followed by a
resize and keeps the quality of a proper downscale. PIL picks the largest
reduction that keeps BOTH sides >= ``draft_size``. The rule for choosing
``draft_size`` (``ImageTransform.draft_size`` applies it): draft only to a
size at which the pixels the transform will use are still at least the output
size, so the transform never upsamples because of drafting:

* eval (resize the whole image to ``S x S``): ``draft_size = S``;
* train (RandomResizedCrop with area fraction >= ``s_min`` and aspect ratio
  >= ``r_min``): every crop's shorter side is at least
  ``sqrt(s_min * r_min)`` times the image's shorter side, so
  ``draft_size = ceil(S / sqrt(s_min * r_min))`` (366 for 224, 628 for 384 with
  the 0.5 / 0.75 defaults).

Other formats are decoded normally.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError


class CorruptSampleError(ValueError):
    """A sample whose stored content cannot be used (undecodable image, no caption, ...)."""


def decode_image(data: bytes, draft_size: int | None = None) -> Image.Image:
    """Decode encoded image bytes to an RGB PIL image.

    Raises ``CorruptSampleError`` (a ``ValueError``) naming the failure when
    the bytes are not a readable image, including truncated files.
    """
    if not data:
        raise CorruptSampleError("cannot decode image: empty bytes")
    try:
        with warnings.catch_warnings():
            # Oversized images raise below; PIL's "possible decompression bomb" warning is noise here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if draft_size is not None and image.format == "JPEG":
                image.draft("RGB", (draft_size, draft_size))
            image = image.convert("RGB")  # forces the full decode, so truncation surfaces here
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise CorruptSampleError(
            f"cannot decode image ({len(data)} bytes, header {bytes(data[:8])!r}): "
            f"{type(err).__name__}: {err}"
        ) from err
    return image
