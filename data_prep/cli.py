"""The flags every converter accepts and the one entry every converter runs through.

A converter is a parser and a planner (arguments -> split jobs: records plus
the function that builds a row from one); :class:`Converter` does the rest.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from data_prep import inputs
from data_prep.common import ConversionError
from data_prep.report import SplitReport
from data_prep.writer import SplitJob, WriterOptions, write_dataset

Plan = Sequence[SplitJob] | tuple[Sequence[SplitJob], Mapping[str, str]]
"""What a planner returns: the split jobs, optionally with small files to write at ``--out``."""

# Flags that change how a conversion runs, not what it writes: a re-run may change them.
_RUNTIME_ONLY = frozenset({"out", "num_workers", "overwrite", "staging_dir", "no_progress", "engine",
                           "spark_master"})


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text}")
    return value


def add_common_args(parser: argparse.ArgumentParser, image_args: bool = True) -> None:
    g = parser.add_argument_group("output (common to every converter)")
    g.add_argument("--out", required=True,
                   help="output folder or an object-store prefix: s3://, gs://, azure://, oci://, "
                        "hf://datasets/ORG/NAME/, dbfs:/Volumes/... (data_prep/README.md, Object stores)")
    g.add_argument("--num-workers", type=positive_int, default=os.cpu_count() or 1,
                   help="worker processes (default: all cores); output is identical for any value")
    g.add_argument("--compression", default="zstd",
                   help="shard compression, e.g. zstd, zstd:7, gz, none (default zstd)")
    g.add_argument("--shard-size", default="64mb", help="shard size limit (default 64mb)")
    g.add_argument("--group-size", type=positive_int, default=1000,
                   help="records per resumable group written by one worker (default 1000; tars: one group per tar)")
    if image_args:
        g.add_argument("--max-image-side", type=positive_int, default=None,
                       help="downscale larger images to this longest side and store them as "
                            "quality-95 JPEG (default: keep the original bytes)")
    g.add_argument("--limit", type=positive_int, default=None,
                   help="convert only the first N records of each split (for trials)")
    g.add_argument("--overwrite", action="store_true",
                   help="delete existing output at the destination and convert again")
    g.add_argument("--staging-dir", default=None,
                   help="local scratch folder for s3:// output (default: system temp)")
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    g.add_argument("--engine", choices=("local", "spark"), default="local",
                   help="who writes the groups: local worker processes (default) or Spark, one task per "
                        "group (local[--num-workers] unless --spark-master or spark-submit says otherwise); "
                        "the output is the same bytes")
    g.add_argument("--spark-master", default=None,
                   help="--engine spark: the cluster's master URL, e.g. spark://host:7077 or yarn "
                        "(outputs must then be on shared or object storage)")


def byte_size(text: str) -> int:
    from data_prep.line_ranges import parse_size

    try:
        value = parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive size, got {text}")
    return value


def add_range_arg(parser: argparse.ArgumentParser, default: str, what: str) -> None:
    """``--range-size``: how the driver cuts a line-based input into groups (see line_ranges.py)."""
    parser.add_argument("--range-size", type=byte_size, default=byte_size(default),
                        help=f"cut each input file into resumable groups of about this many bytes, at line "
                             f"ends ({what}; default {default}); replaces --group-size for these inputs")


def add_split_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", default="",
                        help="write to <out>/<split>/ (default: this dataset has no splits, write to <out>/)")


def writer_options(args: argparse.Namespace) -> WriterOptions:
    compression = None if args.compression in ("", "none", "None") else args.compression
    return WriterOptions(num_workers=args.num_workers, compression=compression,
                         shard_size=args.shard_size, group_size=args.group_size, limit=args.limit,
                         overwrite=args.overwrite, staging_dir=args.staging_dir,
                         show_progress=not args.no_progress, engine=args.engine,
                         spark_master=args.spark_master)


def manifest_args(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments that decide the output, with input paths made absolute."""
    out = {}
    for key, value in sorted(vars(args).items()):
        if key in _RUNTIME_ONLY or key in WriterOptions.__dataclass_fields__:
            continue
        if isinstance(value, str) and os.path.exists(value):
            value = os.path.abspath(value)
        elif isinstance(value, list):
            value = [os.path.abspath(v) if isinstance(v, str) and os.path.exists(v) else v
                     for v in value]
        out[key] = value
    return out


def run_cli(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> int:
    """Run a converter's ``main``; a :class:`ConversionError` becomes a message and exit 2."""
    try:
        main(argv)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


@dataclass(frozen=True)
class Converter:
    """One converter script: ``tool`` names it in the manifest, ``plan`` reads its inputs."""

    tool: str
    build_parser: Callable[[], argparse.ArgumentParser]
    plan: Callable[[argparse.Namespace], Plan]

    def main(self, argv: Sequence[str] | None = None) -> list[SplitReport]:
        """Parse ``argv``, plan the splits and write them (the same call a user's command makes)."""
        args = self.build_parser().parse_args(argv)
        inputs.forget()  # store inputs are listed afresh by each conversion
        if args.engine == "spark":
            from data_prep.spark_engine import require_spark

            require_spark()  # one line naming what to install, before planning
        planned = self.plan(args)
        jobs, extra = planned if isinstance(planned, tuple) else (planned, {})
        return write_dataset(args.out, list(jobs), writer_options(args), self.tool, manifest_args(args), extra)

    def cli(self, argv: Sequence[str] | None = None) -> int:
        return run_cli(self.main, argv)
