"""SBU Captions -> image-text MDS.

From img2dataset webdataset tars:

    python data_prep/convert_sbu.py --tars /data/sbu/tars --out /data/mds/sbu

or from the original json (``{"image_urls", "captions", "user_ids"}``) next
to a folder of images named by row (``123.jpg``, ``00000/000000123.jpg``) or
by the url's file name:

    python data_prep/convert_sbu.py --json sbu-captions-all.json --images /data/sbu/images \\
        --out s3://bucket/mds/sbu
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from data_prep.cli import add_common_args, add_split_arg, manifest_args, run_cli, writer_options
from data_prep.common import ConversionError, load_json
from data_prep.downloaded import downloaded_job
from data_prep.report import SkipLog, SplitReport
from data_prep.tar_pairs import tar_pairs_job
from data_prep.writer import write_dataset


def read_sbu_json(path: str) -> list[tuple[int, Any, str]]:
    data = load_json(path, "SBU json")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("image_urls", "captions")):
        raise ConversionError(f"{path} is not an SBU json: expected lists 'image_urls' and 'captions'")
    urls, captions = data["image_urls"], data["captions"]
    if len(urls) != len(captions):
        raise ConversionError(f"{path}: {len(urls)} image_urls but {len(captions)} captions")
    return [(i, c, u if isinstance(u, str) else "") for i, (u, c) in enumerate(zip(urls, captions))]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--tars", nargs="+", help="img2dataset webdataset tars (files, folders, globs)")
    inputs.add_argument("--json", help="SBU json (needs --images)")
    parser.add_argument("--images", help="folder of downloaded images named by row or url file name")
    add_split_arg(parser)
    add_common_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> list[SplitReport]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.tars:
        job = tar_pairs_job(args.tars, "sbu", args.split, args.max_image_side)
    elif not args.images:
        parser.error("--json needs --images")
    else:
        job = downloaded_job(read_sbu_json(args.json), args.images, "sbu", args.split, args.max_image_side,
                             SkipLog())
    return write_dataset(args.out, [job], writer_options(args), "convert_sbu", manifest_args(args))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
