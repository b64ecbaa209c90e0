"""NLVR2 -> NLVR2 MDS (``train``, ``dev``, ``test1``, ``test2``): one row per sentence and image pair.

    python data_prep/convert_nlvr2.py --data-dir nlvr/nlvr2/data --images /data/nlvr2 \\
        --out s3://bucket/mds/nlvr2

``--data-dir`` holds lil-lab/nlvr's json-lines files ``train.json``,
``dev.json``, ``test1.json`` and ``test2.json`` (released 2022; converted when
present). ``--images`` holds the image zips as they unpack:
``images/train/<directory>/``, ``dev/``, ``test1/``, ``test2/`` (the layout of
the VLMo/ViLT data guides), or the flat ``train/<directory>/``, ``dev/``, ...
Images are ``{identifier minus its last -k}-img0.png`` / ``-img1.png``.

A split whose image pairs are missing for more than ``--max-missing-images``
(default 10%) of its examples stops the conversion: that is a wrong
``--images`` or an unfinished unzip, not a few lost downloads. Without
``--splits``, a split whose json is there but none of whose images are (the
lil-lab clone ships ``test2.json``; most users have only the train, dev and
test1 zips) is left out with a one-line note; a split named in ``--splits``
must have its images.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from dataclasses import dataclass
from typing import Any

from data_prep import inputs
from data_prep.cli import Converter, add_common_args, fraction
from data_prep.common import ConversionError, SkipRecord, clean_text, iter_json_lines, require_dir
from data_prep.images import load_image
from data_prep.report import SkipLog
from data_prep.writer import SampleContext, SplitJob
from vlmo_composer.data.schema import NLVR2

SPLITS = ("train", "dev", "test1", "test2")
REQUIRED_SPLITS = ("train", "dev", "test1")
LABELS = {"true": 1, "false": 0}
MAX_MISSING_IMAGES = 0.1


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


def image_folder(images: str, split: str) -> str:
    """The split's folder: as the zips unpack (``images/train``, ``dev``), else the flat one."""
    candidates = ([os.path.join(images, "images", "train"), os.path.join(images, "train")] if split == "train"
                  else [os.path.join(images, split), os.path.join(images, "images", split)])
    return next((c for c in candidates if inputs.is_dir(c)), candidates[0])


def plan_split(split: str, data_dir: str, images: str, skipped: SkipLog) -> list[Nlvr2Record]:
    folder = image_folder(images, split)
    records = []
    for number, obj in iter_json_lines(os.path.join(data_dir, f"{split}.json"), f"NLVR2 {split} json lines", skipped):
        identifier = obj.get("identifier")
        if not isinstance(identifier, str) or identifier.count("-") < 1:
            skipped.add("malformed_json_line", f"{split}.json:{number}")
            continue
        pair = identifier.rsplit("-", 1)[0]
        pair_folder = os.path.join(folder, str(obj["directory"])) if "directory" in obj else folder
        paths = (os.path.join(pair_folder, f"{pair}-img0.png"), os.path.join(pair_folder, f"{pair}-img1.png"))
        records.append(Nlvr2Record(identifier, paths, obj.get("sentence"), obj.get("label")))
    return records


def check_images_present(split: str, records: list[Nlvr2Record], folder: str, max_missing: float) -> None:
    """Fail before writing when more than ``max_missing`` of a split's examples lack an image."""
    missing = sum(not all(inputs.is_file(p) for p in r.image_paths) for r in records)
    if records and missing / len(records) > max_missing:
        raise ConversionError(
            f"NLVR2 {split}: {missing} of {len(records)} examples ({missing / len(records):.0%}) have no image "
            f"pair under {folder} (more than --max-missing-images {max_missing:g}); expected the zips unpacked "
            "as images/train/<directory>/, dev/, test1/, test2/ (or train/<directory>/ ...) under --images")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="folder with train.json, dev.json, test1.json[, test2.json]")
    parser.add_argument("--images", required=True,
                        help="folder with images/train/<directory>/, dev/, test1/[, test2/] (or train/<directory>/)")
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=None,
                        help="default: train, dev, test1, and test2 when test2.json exists; a default split "
                             "with no images under --images is left out with a note")
    parser.add_argument("--max-missing-images", type=fraction, default=MAX_MISSING_IMAGES,
                        help="fail when a larger fraction of a split's examples has no image pair (default 0.1)")
    add_common_args(parser)
    return parser


def has_no_images(records: list[Nlvr2Record]) -> bool:
    return bool(records) and not any(all(inputs.is_file(p) for p in r.image_paths) for r in records)


def plan(args: argparse.Namespace) -> list[SplitJob]:
    require_dir(args.images, "NLVR2 image root")
    splits = args.splits or [s for s in SPLITS if s in REQUIRED_SPLITS
                             or inputs.is_file(os.path.join(args.data_dir, f"{s}.json"))]
    build = functools.partial(build_nlvr2_row, max_image_side=args.max_image_side)
    planned = []
    for split in SPLITS:
        if split in splits:
            skipped = SkipLog()
            planned.append((split, plan_split(split, args.data_dir, args.images, skipped), skipped))
    if args.splits is None:  # default splits: leave out those with a json but no images at all
        absent = [split for split, records, _ in planned if has_no_images(records)]
        if absent and len(absent) < len(planned):
            kept = [split for split, _, _ in planned if split not in absent]
            names, jsons = " and ".join(absent), ", ".join(f"{split}.json" for split in absent)
            print(f"note: NLVR2 {names} skipped: {jsons} in {args.data_dir} but no image pairs under {args.images}; "
                  f"converting {', '.join(kept)}. Choose the splits with --splits {' '.join(kept)} (or unzip "
                  f"the {names} images there and run again)", file=sys.stderr, flush=True)
            planned = [p for p in planned if p[0] not in absent]
    jobs = []
    for split, records, skipped in planned:
        check_images_present(split, records, image_folder(args.images, split), args.max_missing_images)
        jobs.append(SplitJob(split, NLVR2, records, build, skipped=skipped))
    return jobs


CONVERTER = Converter("convert_nlvr2", build_parser, plan)
main = CONVERTER.main

if __name__ == "__main__":
    raise SystemExit(CONVERTER.cli())
