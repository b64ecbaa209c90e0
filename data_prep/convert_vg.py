"""Visual Genome region descriptions -> image-text MDS (all phrases of an image in one row).

    python data_prep/convert_vg.py --regions region_descriptions.json \\
        --images /data/vg --out s3://bucket/mds/vg [--image-data image_data.json]

``--images`` holds ``VG_100K/`` and ``VG_100K_2/`` (as the two image zips
unpack). ``region_descriptions.json`` is all that is needed (the VLMo guide
downloads only it): an image is looked up as ``<id>.jpg`` in both folders.
With the optional ``image_data.json`` its folder comes from its url.
"""

from __future__ import annotations

import argparse
import functools
import os
import urllib.parse
from typing import Any

from data_prep import inputs
from data_prep.cli import Converter, add_common_args, add_split_arg
from data_prep.common import ConversionError, load_json, require_dir
from data_prep.image_text import ImageTextRecord, build_image_text
from data_prep.report import SkipLog
from data_prep.writer import SplitJob
from vlmo_composer.data.schema import IMAGE_TEXT

IMAGE_FOLDERS = ("VG_100K", "VG_100K_2")


def _image_path(images: str, image_id: str, meta: dict[str, Any] | None) -> str:
    url = meta.get("url") if meta else None
    parts = urllib.parse.urlparse(url).path.split("/") if isinstance(url, str) else []
    if len(parts) >= 2 and parts[-1]:
        return os.path.join(images, parts[-2], parts[-1])
    for folder in IMAGE_FOLDERS:
        path = os.path.join(images, folder, f"{image_id}.jpg")
        if inputs.is_file(path):
            return path
    return ""  # reported as missing_image


def plan_vg(regions_path: str, image_data_path: str | None, images: str) -> tuple[list[ImageTextRecord], SkipLog]:
    regions = load_json(regions_path, "VG region_descriptions.json")
    image_data = load_json(image_data_path, "VG image_data.json") if image_data_path else []
    if not isinstance(regions, list) or not isinstance(image_data, list):
        raise ConversionError("VG region_descriptions.json and image_data.json must both hold a json list")
    require_dir(images, "VG image root")
    meta_of = {}
    for meta in image_data:
        if isinstance(meta, dict):
            meta_of[str(meta.get("image_id", meta.get("id")))] = meta
    skipped = SkipLog()
    records = []
    for i, entry in enumerate(regions):
        if not isinstance(entry, dict) or not isinstance(entry.get("regions"), list):
            skipped.add("malformed_annotation", f"region_descriptions[{i}]")
            continue
        image_id = str(entry.get("id", entry.get("image_id", "")))
        if not entry["regions"]:
            skipped.add("no_regions", image_id)
            continue
        phrases = tuple(r.get("phrase") if isinstance(r, dict) else None for r in entry["regions"])
        path = _image_path(images, image_id, meta_of.get(image_id))
        records.append(ImageTextRecord(image_id, path, phrases, "vg"))
    return records, skipped


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regions", required=True, help="region_descriptions.json")
    parser.add_argument("--image-data", default=None, help="image_data.json (optional)")
    parser.add_argument("--images", required=True, help="folder holding VG_100K/ and VG_100K_2/")
    add_split_arg(parser)
    add_common_args(parser)
    return parser


def plan(args: argparse.Namespace) -> list[SplitJob]:
    records, skipped = plan_vg(args.regions, args.image_data, args.images)
    build = functools.partial(build_image_text, max_image_side=args.max_image_side)
    return [SplitJob(args.split, IMAGE_TEXT, records, build, skipped=skipped)]


CONVERTER = Converter("convert_vg", build_parser, plan)
main = CONVERTER.main

if __name__ == "__main__":
    raise SystemExit(CONVERTER.cli())
