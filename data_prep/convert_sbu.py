"""SBU Captions -> image-text MDS.

From img2dataset webdataset tars (failed downloads counted from each shard's
``.parquet`` / ``_stats.json``):

    python data_prep/convert_sbu.py --tars /data/sbu/tars --out /data/mds/sbu

or from the url list next to a folder of images named by row (``123.jpg``,
img2dataset's ``00000/000000123.jpg``), either ``sbu-captions-all.json``
(``{"image_urls", "captions", "user_ids"}``) or the 2011 release's two text
files (one url / one caption per line, in the same order):

    python data_prep/convert_sbu.py --json sbu-captions-all.json --images /data/sbu/images \\
        --out s3://bucket/mds/sbu
    python data_prep/convert_sbu.py --urls-txt SBU_captioned_photo_dataset_urls.txt \\
        --captions-txt SBU_captioned_photo_dataset_captions.txt --images /data/sbu/images --out ...

The driver plans from the inputs' sizes only: one group per ``--range-size``
of input, whose worker parses the (fixed, ~1M-row) input and keeps its
contiguous share of the rows. The json holds urls and captions in separate
arrays, so no byte range of it is a set of rows; parsing it per group costs a
second or so per group and keeps the driver's memory flat.
"""

from __future__ import annotations

import argparse
import io
import os
from dataclasses import dataclass

from data_prep import inputs
from data_prep.cli import Converter, add_common_args, add_range_arg, add_split_arg
from data_prep.common import ConversionError, load_json, require_file
from data_prep.downloaded import CaptionedRow, downloaded_job
from data_prep.report import SkipLog
from data_prep.tar_pairs import add_tars_argument, tar_pairs_job
from data_prep.writer import SplitJob


def _pair_up(urls: list, captions: list, what: str) -> list[CaptionedRow]:
    if len(urls) != len(captions):
        raise ConversionError(f"{what}: {len(urls)} image_urls but {len(captions)} captions")
    return [CaptionedRow(i, c, u if isinstance(u, str) else "") for i, (u, c) in enumerate(zip(urls, captions))]


def read_sbu_json(path: str) -> list[CaptionedRow]:
    data = load_json(path, "SBU json")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("image_urls", "captions")):
        raise ConversionError(f"{path} is not an SBU json: expected lists 'image_urls' and 'captions'")
    return _pair_up(data["image_urls"], data["captions"], path)


def _read_lines(path: str, what: str) -> list[str]:
    require_file(path, what)
    try:
        with io.TextIOWrapper(inputs.open_binary(path), encoding="utf-8", errors="replace", newline="") as f:
            lines = [line.rstrip("\r\n") for line in f]
    except OSError as e:
        raise ConversionError(f"cannot read {what} {path}: {e}") from None
    return lines


def read_sbu_txt(urls_path: str, captions_path: str) -> list[CaptionedRow]:
    """The 2011 release: line i of the url file and line i of the caption file are one pair."""
    urls = _read_lines(urls_path, "SBU url list")
    captions = _read_lines(captions_path, "SBU caption list")
    return _pair_up([u.strip() for u in urls], captions, f"{urls_path} and {captions_path}")


def _stamp(path: str) -> str:
    info = inputs.require_stat(path, "SBU input")
    return f"{os.path.basename(path)}:{info.size}:{info.version}"


@dataclass(frozen=True)
class SbuSlice:
    """Group ``index`` of ``count``: a contiguous share of the rows, read by its worker.

    The json keeps urls and captions in two separate arrays, so no byte range of it holds whole
    rows: each worker parses the file and keeps its share (rows ``[n*index//count, n*(index+1)//count)``).
    """

    paths: tuple[str, ...]
    """The json, or the url list and the caption list."""
    stamps: str
    index: int
    count: int

    @property
    def fingerprint(self) -> str:
        return f"{self.stamps}:{self.index}/{self.count}"

    def read(self, skipped: SkipLog) -> tuple[list[CaptionedRow], range]:
        if ";".join(_stamp(p) for p in self.paths) != self.stamps:
            raise ConversionError(f"{self.paths[0]} changed while it was being converted; run the same "
                                  "command again to convert it as it is now")
        rows = read_sbu_json(self.paths[0]) if len(self.paths) == 1 else read_sbu_txt(*self.paths)
        lo, hi = len(rows) * self.index // self.count, len(rows) * (self.index + 1) // self.count
        return rows[lo:hi], range(lo, hi)


def sbu_slices(paths: tuple[str, ...], range_bytes: int) -> list[tuple[str, SbuSlice]]:
    """The plan, from a stat: one group per ``range_bytes`` of input (the driver parses nothing)."""
    stamps = ";".join(_stamp(p) for p in paths)
    count = max(1, -(-sum(inputs.require_stat(p, "SBU input").size for p in paths) // range_bytes))
    return [(f"{paths[0]}#{i}", SbuSlice(paths, stamps, i, count)) for i in range(count)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sources = parser.add_mutually_exclusive_group(required=True)
    add_tars_argument(sources)
    sources.add_argument("--json", help="sbu-captions-all.json (needs --images)")
    sources.add_argument("--urls-txt", help="SBU_captioned_photo_dataset_urls.txt (needs --captions-txt, --images)")
    parser.add_argument("--captions-txt", help="SBU_captioned_photo_dataset_captions.txt")
    parser.add_argument("--images", help="folder of downloaded images named by row")
    add_range_arg(parser, "16mb", "--json / --urls-txt: about 100,000 SBU rows; each group's worker parses the "
                  "whole input and keeps its share")
    add_split_arg(parser)
    add_common_args(parser)
    return parser


def plan(args: argparse.Namespace) -> list[SplitJob]:
    if args.tars:
        return [tar_pairs_job(args.tars, "sbu", args.split, args.max_image_side)]
    if not args.images:
        raise ConversionError("--json / --urls-txt need --images (the folder of downloaded images)")
    if args.urls_txt and not args.captions_txt:
        raise ConversionError("--urls-txt needs --captions-txt")
    paths = (args.json,) if args.json else (args.urls_txt, args.captions_txt)
    return [downloaded_job(sbu_slices(paths, args.range_size), args.images, "sbu", args.split, args.max_image_side)]


CONVERTER = Converter("convert_sbu", build_parser, plan)
main = CONVERTER.main

if __name__ == "__main__":
    raise SystemExit(CONVERTER.cli())
