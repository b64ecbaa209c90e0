"""Web image-text pairs in img2dataset webdataset tars -> image-text MDS.

    python data_prep/convert_webdataset.py --tars /data/laion/00000.tar /data/laion/00001.tar \\
        --source laion --out s3://bucket/mds/laion

``--tars`` takes files, folders (every ``*.tar`` inside) or globs. Samples
whose json ``status`` is not ``success`` are skipped and counted.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from data_prep.cli import add_common_args, add_split_arg, manifest_args, run_cli, writer_options
from data_prep.report import SplitReport
from data_prep.tar_pairs import tar_pairs_job
from data_prep.writer import write_dataset


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tars", nargs="+", required=True, help="tar files, folders or globs")
    parser.add_argument("--source", default="web", help="value of the 'source' column (default web)")
    add_split_arg(parser)
    add_common_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> list[SplitReport]:
    args = build_parser().parse_args(argv)
    job = tar_pairs_job(args.tars, args.source, args.split, args.max_image_side)
    return write_dataset(args.out, [job], writer_options(args), "convert_webdataset", manifest_args(args))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
