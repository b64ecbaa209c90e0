"""Conceptual Captions 3M / 12M -> image-text MDS.

From img2dataset webdataset tars:

    python data_prep/convert_cc.py --variant cc3m --tars /data/cc3m/train --split train --out /data/mds/cc3m

or from the raw tsv next to a folder of images named by row (``123.jpg`` or
``00000/000000123.jpg``, row = 0-based line number of the tsv):

    python data_prep/convert_cc.py --variant cc3m --tsv Train_GCC-training.tsv \\
        --images /data/cc3m/images --split train --out s3://bucket/mds/cc3m

CC3M's tsv is ``caption<TAB>url``; CC12M's is ``url<TAB>caption``
(``--tsv-columns url,caption``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from data_prep.cli import add_common_args, add_split_arg, manifest_args, run_cli, writer_options
from data_prep.common import ConversionError, require_file
from data_prep.downloaded import downloaded_job
from data_prep.report import SkipLog, SplitReport
from data_prep.tar_pairs import tar_pairs_job
from data_prep.writer import write_dataset


def read_caption_tsv(path: str, columns: str, skipped: SkipLog) -> list[tuple[int, Any, str]]:
    """(row, caption, url) of each well-formed line; other lines are counted."""
    require_file(path, "caption tsv")
    caption_first = columns == "caption,url"
    name = os.path.basename(path)
    rows = []
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            for row, line in enumerate(f):
                fields = line.rstrip("\r\n").split("\t")
                if len(fields) != 2:
                    skipped.add("malformed_tsv_line", f"{name}:{row + 1}")
                    continue
                caption, url = fields if caption_first else fields[::-1]
                rows.append((row, caption, url))
    except OSError as e:
        raise ConversionError(f"cannot read caption tsv {path}: {e}") from None
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=("cc3m", "cc12m"), default="cc3m",
                        help="value of the 'source' column")
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--tars", nargs="+", help="img2dataset webdataset tars (files, folders, globs)")
    inputs.add_argument("--tsv", help="raw caption tsv (needs --images)")
    parser.add_argument("--images", help="folder of downloaded images named by tsv row")
    parser.add_argument("--tsv-columns", choices=("caption,url", "url,caption"), default="caption,url")
    add_split_arg(parser)
    add_common_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> list[SplitReport]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.tars:
        job = tar_pairs_job(args.tars, args.variant, args.split, args.max_image_side)
    elif not args.images:
        parser.error("--tsv needs --images")
    else:
        skipped = SkipLog()
        rows = read_caption_tsv(args.tsv, args.tsv_columns, skipped)
        job = downloaded_job(rows, args.images, args.variant, args.split, args.max_image_side, skipped)
    return write_dataset(args.out, [job], writer_options(args), "convert_cc", manifest_args(args))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
