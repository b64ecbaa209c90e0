"""Image-text rows (schema ``image_text``): one image with all of its captions.

Shared by every captioned source (COCO, Flickr30K, CC, SBU, VG, web pairs),
so they clean captions and check images the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from data_prep.common import SkipRecord, clean_captions
from data_prep.images import prepare_image, read_file_bytes
from data_prep.writer import SampleContext


@dataclass(frozen=True)
class ImageTextRecord:
    """An image file on disk (empty path: none was found) and its raw captions."""

    record_id: str
    path: str
    captions: tuple[Any, ...]
    source: str


def image_text_sample(record_id: str, image_bytes: bytes, captions: list[Any], source: str,
                      context: SampleContext, max_image_side: int | None) -> dict[str, Any]:
    kept = clean_captions(captions, context, record_id)
    image = prepare_image(image_bytes, max_image_side)
    return {"image": image.data, "captions": kept, "image_id": record_id, "source": source,
            "width": image.width, "height": image.height}


def build_image_text(record: ImageTextRecord, context: SampleContext,
                     max_image_side: int | None = None) -> dict[str, Any]:
    if not record.path:
        raise SkipRecord("missing_image", "no downloaded file for this record")
    return image_text_sample(record.record_id, read_file_bytes(record.path), list(record.captions),
                             record.source, context, max_image_side)
