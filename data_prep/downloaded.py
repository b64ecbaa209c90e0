"""Captioned rows next to a folder of images a downloader already fetched.

Conceptual Captions (tsv) and SBU (json) list captions with urls; the images
are fetched separately and named by row (``123.jpg`` or img2dataset's
``00000/000000123.jpg``) or by the url's file name. A row without a file is
kept as a record so the report counts it as ``missing_image``.
"""

from __future__ import annotations

import functools
import os
import urllib.parse
from typing import Any

from data_prep.common import index_downloaded_images
from data_prep.image_text import ImageTextRecord, build_image_text
from data_prep.report import SkipLog
from data_prep.writer import SplitJob
from vlmo_composer.data.schema import IMAGE_TEXT


def match_rows(rows: list[tuple[int, Any, str]], images: str, source: str) -> list[ImageTextRecord]:
    """Records for (row number, caption, url) rows, each with its downloaded file if any."""
    index = index_downloaded_images(images)
    records = []
    for row, caption, url in rows:
        url_name = os.path.basename(urllib.parse.urlparse(url).path) if url else ""
        path = index.get(str(row)) or (index.get(url_name, "") if url_name else "")
        records.append(ImageTextRecord(str(row), path, (caption,), source))
    return records


def downloaded_job(rows: list[tuple[int, Any, str]], images: str, source: str, split: str,
                   max_image_side: int | None, skipped: SkipLog) -> SplitJob:
    """The image-text job for captioned rows next to a folder of downloads."""
    build = functools.partial(build_image_text, max_image_side=max_image_side)
    return SplitJob(split, IMAGE_TEXT, match_rows(rows, images, source), build, skipped=skipped)
