"""COCO / Flickr30K Karpathy splits -> image-text MDS (``train`` (+restval), ``val``, ``test``).

    python data_prep/convert_karpathy.py --dataset coco --json dataset_coco.json \\
        --images /data/coco --out s3://bucket/mds/coco

COCO images are found at ``<images>/<filepath>/<filename>`` (``train2014/``,
``val2014/``), Flickr30K at ``<images>/<filename>``. One row per image with
all of its captions, so retrieval sees every caption of an image together.
"""

from __future__ import annotations

import argparse
import functools
import os
from typing import Any

from data_prep.cli import Converter, add_common_args
from data_prep.common import ConversionError, load_json, require_dir
from data_prep.image_text import ImageTextRecord, build_image_text
from data_prep.report import SkipLog
from data_prep.writer import SplitJob
from vlmo_composer.data.schema import IMAGE_TEXT

SPLIT_OF = {"train": "train", "restval": "train", "val": "val", "test": "test"}
SPLITS = ("train", "val", "test")


def _image_id(entry: dict[str, Any], dataset: str) -> str:
    if dataset == "coco" and "cocoid" in entry:
        return str(entry["cocoid"])
    return os.path.splitext(entry["filename"])[0]


def plan_karpathy(json_path: str, images: str, dataset: str) -> tuple[dict[str, list[ImageTextRecord]], SkipLog]:
    """Records per split, in the json's order, and the entries that could not be used."""
    data = load_json(json_path, f"{dataset} Karpathy json")
    entries = data.get("images") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ConversionError(f"{json_path} has no 'images' list: is it a Karpathy dataset_*.json?")
    require_dir(images, "image root")
    records: dict[str, list[ImageTextRecord]] = {s: [] for s in SPLITS}
    skipped = SkipLog()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str):
            skipped.add("malformed_annotation", f"images[{i}]")
            continue
        image_id = _image_id(entry, dataset)
        split = SPLIT_OF.get(entry.get("split", ""))
        if split is None:
            skipped.add("unknown_split", f"{image_id} ({entry.get('split')!r})")
            continue
        sentences = entry.get("sentences")
        if not isinstance(sentences, list):
            skipped.add("malformed_annotation", image_id)
            continue
        captions = tuple(s.get("raw") if isinstance(s, dict) else None for s in sentences)
        path = os.path.join(images, entry.get("filepath", "") or "", entry["filename"])
        records[split].append(ImageTextRecord(image_id, path, captions, dataset))
    return records, skipped


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("coco", "f30k"), required=True)
    parser.add_argument("--json", required=True, help="dataset_coco.json or dataset_flickr30k.json")
    parser.add_argument("--images", required=True, help="image root (see above)")
    add_common_args(parser)
    return parser


def plan(args: argparse.Namespace) -> list[SplitJob]:
    records, skipped = plan_karpathy(args.json, args.images, args.dataset)
    build = functools.partial(build_image_text, max_image_side=args.max_image_side)
    jobs = [SplitJob(split, IMAGE_TEXT, records[split], build) for split in SPLITS]
    jobs[0].skipped.merge(skipped)  # entries without a usable split are reported with train
    return jobs


CONVERTER = Converter("convert_karpathy", build_parser, plan)
main = CONVERTER.main

if __name__ == "__main__":
    raise SystemExit(CONVERTER.cli())
