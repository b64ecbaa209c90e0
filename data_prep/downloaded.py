"""Captioned rows next to a folder of images a downloader already fetched.

Conceptual Captions (tsv) and SBU (json) list captions with urls; the images
are fetched separately and named by row (``123.jpg`` or img2dataset's
``00000/000000123.jpg``) or by the url's file name. A row without a file is
kept as a record so the report counts it as ``missing_image``.
"""

from __future__ import annotations

import os
import urllib.parse
from typing import Any

from data_prep.common import index_downloaded_images
from data_prep.image_text import ImageTextRecord


def match_rows(rows: list[tuple[int, Any, str]], images: str, source: str) -> list[ImageTextRecord]:
    """Records for (row number, caption, url) rows, each with its downloaded file if any."""
    index = index_downloaded_images(images)
    records = []
    for row, caption, url in rows:
        url_name = os.path.basename(urllib.parse.urlparse(url).path) if url else ""
        path = index.get(str(row)) or (index.get(url_name, "") if url_name else "")
        records.append(ImageTextRecord(str(row), path, (caption,), source))
    return records
