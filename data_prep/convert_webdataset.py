"""Web image-text pairs in img2dataset webdataset tars -> image-text MDS.

    python data_prep/convert_webdataset.py --tars /data/laion/00000.tar /data/laion/00001.tar \\
        --source laion --out s3://bucket/mds/laion

``--tars`` takes files, folders (every ``*.tar`` inside) or globs, local or on a
store (any of ``stores.py``'s; each worker downloads its own tar). Samples
whose json ``status`` is not ``success`` are skipped and counted, and so are the
rows img2dataset lists as failed in each shard's ``.parquet`` / ``_stats.json``.
"""

from __future__ import annotations

import argparse

from data_prep.cli import Converter, add_common_args, add_split_arg
from data_prep.tar_pairs import add_tars_argument, tar_pairs_job
from data_prep.writer import SplitJob


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_tars_argument(parser, required=True)
    parser.add_argument("--source", default="web", help="value of the 'source' column (default web)")
    add_split_arg(parser)
    add_common_args(parser)
    return parser


def plan(args: argparse.Namespace) -> list[SplitJob]:
    return [tar_pairs_job(args.tars, args.source, args.split, args.max_image_side)]


CONVERTER = Converter("convert_webdataset", build_parser, plan)
main = CONVERTER.main

if __name__ == "__main__":
    raise SystemExit(CONVERTER.cli())
