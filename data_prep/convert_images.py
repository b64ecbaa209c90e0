"""Image folders -> image-only MDS (vision pre-training data).

    python data_prep/convert_images.py --images /data/imagenet/train --split train \\
        --max-image-side 384 --out s3://bucket/mds/imagenet

ImageNet-style class folders (``<images>/<class>/**/*.jpg``) give rows with a
``label`` (class index in sorted folder-name order, listed in
``classes.json`` next to the index; schema ``image_labeled``); a flat folder
(images found recursively) gives rows with ``image`` only (schema ``image``).
``--labels none`` ignores class folders.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
from dataclasses import dataclass
from typing import Any

from data_prep import inputs
from data_prep.cli import Converter, add_common_args, add_split_arg
from data_prep.common import ConversionError, is_image_file, list_image_files, require_dir
from data_prep.images import load_image
from data_prep.writer import SampleContext, SplitJob
from vlmo_composer.data.schema import IMAGE, IMAGE_LABELED

CLASSES_NAME = "classes.json"


@dataclass(frozen=True)
class ImageFileRecord:
    record_id: str  # path relative to the image root
    path: str
    label: int | None


def build_image_row(record: ImageFileRecord, context: SampleContext,
                    max_image_side: int | None = None) -> dict[str, Any]:
    image = load_image(record.path, max_image_side)
    row: dict[str, Any] = {"image": image.data}
    if record.label is not None:
        row["label"] = record.label
    return row


def has_class_folders(root: str) -> bool:
    folders, files = inputs.list_dir(root)
    return bool(folders) and not any(is_image_file(e) for e in files)


def plan_images(root: str, labels: str) -> tuple[list[ImageFileRecord], list[str] | None]:
    """Records in sorted path order, and the class names when labelled."""
    require_dir(root, "image folder")
    if labels == "folders" or (labels == "auto" and has_class_folders(root)):
        classes = inputs.list_dir(root)[0]
        if not classes:
            raise ConversionError(f"{root} has no class folders")
        records = [ImageFileRecord(os.path.join(name, rel), os.path.join(root, name, rel), label)
                   for label, name in enumerate(classes)
                   for rel in list_image_files(os.path.join(root, name))]
        return records, classes
    records = [ImageFileRecord(rel, os.path.join(root, rel), None) for rel in list_image_files(root)]
    return records, None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True,
                        help="image folder (class folders or flat; local or on any store: s3://, gs://, azure://, ...)")
    parser.add_argument("--labels", choices=("auto", "folders", "none"), default="auto",
                        help="auto: label by class folder when the root holds only folders")
    add_split_arg(parser)
    add_common_args(parser)
    return parser


def plan(args: argparse.Namespace) -> list[SplitJob]:
    records, classes = plan_images(args.images, args.labels)
    if not records:
        raise ConversionError(f"no image files under {args.images}")
    build = functools.partial(build_image_row, max_image_side=args.max_image_side)
    schema = IMAGE if classes is None else IMAGE_LABELED
    extra = {} if classes is None else {CLASSES_NAME: json.dumps({"classes": classes}, indent=1)}
    return [SplitJob(args.split, schema, records, build, extra_files=extra)]


CONVERTER = Converter("convert_images", build_parser, plan)
main = CONVERTER.main

if __name__ == "__main__":
    raise SystemExit(CONVERTER.cli())
