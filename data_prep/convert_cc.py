"""Conceptual Captions 3M / 12M -> image-text MDS.

From img2dataset webdataset tars (``--output_format webdataset``; failed
downloads are counted from each shard's ``.parquet`` / ``_stats.json``):

    python data_prep/convert_cc.py --variant cc3m --tars /data/cc3m/train --split train --out /data/mds/cc3m

or from the tsv next to a folder of images named by row (``123.jpg`` or
img2dataset's ``--output_format files`` ``00000/000000123.jpg``; row = 0-based
data line of the tsv, a header excluded):

    python data_prep/convert_cc.py --variant cc3m --tsv Train_GCC-training.tsv \\
        --images /data/cc3m/images --split train --out s3://bucket/mds/cc3m

Google's CC3M tsv is ``caption<TAB>url`` without a header, CC12M's
``url<TAB>caption`` (``--tsv-columns url,caption``). A ``caption<TAB>url`` or
``url<TAB>caption`` first line (the header img2dataset's recipes add) is read
as a header and gives the column order. A download whose img2dataset ``.json``
names another url or caption than its row is not used (see ``downloaded.py``).
The tsv is planned in byte ranges of ``--range-size`` (one group each, whose
worker reads only its lines and indexes only its rows' downloads), so the
driver does not hold the rows (``line_ranges.py``).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from data_prep import inputs
from data_prep.cli import Converter, add_common_args, add_range_arg, add_split_arg
from data_prep.common import ConversionError, require_file
from data_prep.downloaded import CaptionedRow, downloaded_job
from data_prep.line_ranges import LineRange, plan_ranges, read_range
from data_prep.report import SkipLog
from data_prep.tar_pairs import add_tars_argument, tar_pairs_job
from data_prep.writer import SplitJob

COLUMN_ORDERS = ("caption,url", "url,caption")


def _header_order(fields: list[str]) -> str | None:
    """The column order a ``caption<TAB>url`` / ``url<TAB>caption`` header line gives, else None."""
    order = ",".join(f.strip().lower() for f in fields)
    return order if order in COLUMN_ORDERS else None


@dataclass(frozen=True)
class TsvRange:
    """One byte range of the caption tsv (``line_ranges.py``): a group's rows, read by its worker."""

    range: LineRange
    columns: str
    header: bool

    @property
    def fingerprint(self) -> str:
        return self.range.fingerprint

    def read(self, skipped: SkipLog) -> tuple[list[CaptionedRow], range]:
        """Each well-formed data line (numbered from 0 after a header); other lines are counted."""
        name = os.path.basename(self.range.path)
        rows: list[CaptionedRow] = []
        data_row = self.range.first_row
        for number, raw in read_range(self.range):
            if number == 1 and self.header:
                continue
            fields = raw.decode("utf-8", errors="replace").rstrip("\r\n").split("\t")
            if fields == [""]:  # a blank line is no row (CSV readers such as img2dataset's skip it)
                skipped.add("malformed_tsv_line", f"{name}:{number}")
                continue
            row, data_row = data_row, data_row + 1
            if len(fields) != 2:
                skipped.add("malformed_tsv_line", f"{name}:{number}")
                continue
            caption, url = fields if self.columns == "caption,url" else fields[::-1]
            rows.append(CaptionedRow(row, caption, url))
        return rows, range(self.range.first_row, self.range.first_row + self.range.rows)


def tsv_ranges(path: str, columns: str, range_bytes: int) -> list[tuple[str, TsvRange]]:
    """The plan: the tsv's byte ranges (one pass counting lines and rows; only a header is parsed)."""
    require_file(path, "caption tsv")
    try:
        with inputs.open_binary(path) as f:
            first = f.readline().decode("utf-8", errors="replace")
    except OSError as e:
        raise ConversionError(f"cannot read caption tsv {path}: {e}") from None
    header = _header_order(first.rstrip("\r\n").split("\t"))
    ranges = plan_ranges(path, range_bytes, header_lines=1 if header else 0)
    return [(f"{path}#{i}", TsvRange(r, header or columns, header is not None)) for i, r in enumerate(ranges)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=("cc3m", "cc12m"), default="cc3m",
                        help="value of the 'source' column")
    sources = parser.add_mutually_exclusive_group(required=True)
    add_tars_argument(sources)
    sources.add_argument("--tsv", help="raw caption tsv (needs --images; local or on any store: s3://, gs://, azure://, ...)")
    parser.add_argument("--images", help="folder of downloaded images named by tsv row (local or on a store)")
    parser.add_argument("--tsv-columns", choices=COLUMN_ORDERS, default="caption,url",
                        help="column order of a tsv without a header (CC3M caption,url; CC12M url,caption)")
    add_range_arg(parser, "1mb", "--tsv: ~10,000 CC rows, img2dataset's shard")
    add_split_arg(parser)
    add_common_args(parser)
    return parser


def plan(args: argparse.Namespace) -> list[SplitJob]:
    if args.tars:
        return [tar_pairs_job(args.tars, args.variant, args.split, args.max_image_side)]
    if not args.images:
        raise ConversionError("--tsv needs --images (the folder of downloaded images)")
    return [downloaded_job(tsv_ranges(args.tsv, args.tsv_columns, args.range_size), args.images, args.variant,
                           args.split, args.max_image_side)]


CONVERTER = Converter("convert_cc", build_parser, plan)
main = CONVERTER.main

if __name__ == "__main__":
    raise SystemExit(CONVERTER.cli())
