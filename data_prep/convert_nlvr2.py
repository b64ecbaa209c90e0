"""NLVR2 -> NLVR2 MDS (``train``, ``dev``, ``test1``): one row per sentence and image pair.

    python data_prep/convert_nlvr2.py --data-dir nlvr/nlvr2/data --images /data/nlvr2/images \\
        --out s3://bucket/mds/nlvr2

``--data-dir`` holds the json-lines files ``train.json``, ``dev.json``,
``test1.json``; ``--images`` holds ``train/<directory>/``, ``dev/`` and
``test1/`` with ``{identifier minus its last -k}-img0.png`` / ``-img1.png``.
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from data_prep.cli import add_common_args, manifest_args, run_cli, writer_options
from data_prep.common import SkipRecord, clean_text, iter_json_lines, require_dir
from data_prep.images import load_image
from data_prep.report import SkipLog, SplitReport
from data_prep.writer import SampleContext, SplitJob, write_dataset
from vlmo_composer.data.schema import NLVR2

SPLITS = ("train", "dev", "test1")
LABELS = {"true": 1, "false": 0}


@dataclass(frozen=True)
class Nlvr2Record:
    record_id: str  # the identifier
    image_paths: tuple[str, str]
    sentence: Any
    label: Any


def build_nlvr2_row(record: Nlvr2Record, context: SampleContext,
                    max_image_side: int | None = None) -> dict[str, Any]:
    sentence = clean_text(record.sentence)
    if sentence is None:
        raise SkipRecord("empty_sentence" if isinstance(record.sentence, str) else "non_text_sentence")
    label = LABELS.get(str(record.label).lower())
    if label is None:
        raise SkipRecord("bad_label", repr(record.label))
    images = [load_image(p, max_image_side) for p in record.image_paths]
    return {"image_0": images[0].data, "image_1": images[1].data, "sentence": sentence,
            "label": label, "identifier": record.record_id}


def plan_split(split: str, data_dir: str, images: str, skipped: SkipLog) -> list[Nlvr2Record]:
    records = []
    for number, obj in iter_json_lines(os.path.join(data_dir, f"{split}.json"), f"NLVR2 {split} json lines", skipped):
        identifier = obj.get("identifier")
        if not isinstance(identifier, str) or identifier.count("-") < 1:
            skipped.add("malformed_json_line", f"{split}.json:{number}")
            continue
        pair = identifier.rsplit("-", 1)[0]
        folder = os.path.join(images, split, str(obj.get("directory", ""))) if split == "train" \
            else os.path.join(images, split)
        paths = (os.path.join(folder, f"{pair}-img0.png"), os.path.join(folder, f"{pair}-img1.png"))
        records.append(Nlvr2Record(identifier, paths, obj.get("sentence"), obj.get("label")))
    return records


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="folder with train.json, dev.json, test1.json")
    parser.add_argument("--images", required=True, help="folder with train/<directory>/, dev/, test1/")
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS))
    add_common_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> list[SplitReport]:
    args = build_parser().parse_args(argv)
    require_dir(args.images, "NLVR2 image root")
    build = functools.partial(build_nlvr2_row, max_image_side=args.max_image_side)
    jobs = []
    for split in SPLITS:
        if split in args.splits:
            skipped = SkipLog()
            records = plan_split(split, args.data_dir, args.images, skipped)
            jobs.append(SplitJob(split, NLVR2, records, build, skipped=skipped))
    return write_dataset(args.out, jobs, writer_options(args), "convert_nlvr2", manifest_args(args))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
