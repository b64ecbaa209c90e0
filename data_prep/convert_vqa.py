"""VQA v2 -> VQA MDS (``train``, ``val``, ``test-dev``, ``test``) plus ``answer_vocab.json``.

    python data_prep/convert_vqa.py --vqa-root /data/vqav2 --images /data/coco \\
        --out s3://bucket/mds/vqav2 [--vlmo-split]

``--vqa-root`` holds the official files (``v2_OpenEnded_mscoco_{train2014,
val2014,test2015,test-dev2015}_questions.json``, ``v2_mscoco_{train2014,
val2014}_annotations.json``), either flat as the zips unpack or under
``Questions/`` and ``Annotations/`` as in the GT-Vision-Lab/VQA repository;
``--images`` the COCO folders ``train2014/``, ``val2014/``, ``test2015/``.

The answer vocabulary and the targets follow the official VLMo code exactly
(see ``vlmo_composer/data/vqa_answers.py``): normalised
``multiple_choice_answer`` seen >= 9 times in train+val (3129 answers), soft
scores 0.3/0.6/0.9/1.0 for 1/2/3/>=4 matching annotators. Training drops
questions with no answer in the vocabulary (counted as ``no_answer_in_vocab``),
as VLMo does: they have no target. Val keeps every question, those included
(empty labels: the VQA score counts them 0, the official accuracy scores their
raw answers), so the accuracy on val is the evaluation server's over the whole
val question set. Test splits carry no answers. ``--vlmo-split`` moves all val
images but the last 1000 with an answerable question (in question file order)
into train, as VLMo fine-tunes on train + "trainable val": the moved questions
are training questions (unanswerable ones dropped), the held-out minival keeps
all of its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
from dataclasses import dataclass
from typing import Any

from data_prep import inputs
from data_prep.cli import Converter, add_common_args, positive_int
from data_prep.common import ConversionError, clean_text, load_json, require_dir
from data_prep.images import load_image
from data_prep.report import SkipLog
from data_prep.vqa_rows import ANSWER_VOCAB_NAME, VqaQuestion, vqa_rows
from data_prep.writer import SampleContext, SplitJob
from vlmo_composer.data.schema import VQA
from vlmo_composer.data.vqa_answers import (
    MIN_ANSWER_COUNT,
    answer_targets,
    answer_vocab_to_json,
    build_answer_vocab,
)

SPLITS = ("train", "val", "test-dev", "test")
QUESTION_FILES = {
    "train": "v2_OpenEnded_mscoco_train2014_questions.json",
    "val": "v2_OpenEnded_mscoco_val2014_questions.json",
    "test-dev": "v2_OpenEnded_mscoco_test-dev2015_questions.json",
    "test": "v2_OpenEnded_mscoco_test2015_questions.json",
}
ANNOTATION_FILES = {
    "train": "v2_mscoco_train2014_annotations.json",
    "val": "v2_mscoco_val2014_annotations.json",
}
SUBFOLDERS = {"questions": "Questions", "annotations": "Annotations"}
"""Where the GT-Vision-Lab/VQA repository keeps each kind of file (the zips unpack flat)."""
IMAGE_FOLDERS = {"train": "train2014", "val": "val2014", "test-dev": "test2015", "test": "test2015"}


@dataclass(frozen=True)
class VqaImageRecord:
    """One image and all of its questions: the image is read once, one row per question."""

    record_id: str
    path: str
    questions: tuple[VqaQuestion, ...]


def build_vqa_rows(record: VqaImageRecord, context: SampleContext,
                   max_image_side: int | None = None) -> list[dict[str, Any]]:
    return vqa_rows(load_image(record.path, max_image_side).data, record.record_id, record.questions)


def vqa_file(vqa_root: str, name: str, key: str) -> str:
    """``<root>/<name>``, or ``<root>/Questions/<name>`` / ``<root>/Annotations/<name>``."""
    flat = os.path.join(vqa_root, name)
    nested = os.path.join(vqa_root, SUBFOLDERS[key], name)
    return nested if not inputs.is_file(flat) and inputs.is_file(nested) else flat


def _list_of(vqa_root: str, name: str, key: str, what: str) -> list[Any]:
    path = vqa_file(vqa_root, name, key)
    data = load_json(path, what)
    items = data.get(key) if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ConversionError(f"{path} has no '{key}' list: is it the VQA v2 {what}?")
    return items


def load_annotations(vqa_root: str) -> dict[str, dict[int, dict[str, Any]]]:
    """question_id -> annotation, for train and val (in file order)."""
    by_split = {}
    for split, name in ANNOTATION_FILES.items():
        annotations = _list_of(vqa_root, name, "annotations", f"{split} annotations")
        by_split[split] = {a["question_id"]: a for a in annotations
                           if isinstance(a, dict) and "question_id" in a}
    return by_split


def vocabulary(annotations: dict[str, dict[int, dict[str, Any]]], min_count: int) -> list[str]:
    majority = [a.get("multiple_choice_answer", "") for split in ("train", "val")
                for a in annotations[split].values()]
    return build_answer_vocab([m for m in majority if isinstance(m, str)], min_count)


def _raw_answers(annotation: dict[str, Any]) -> tuple[str, ...]:
    answers = annotation.get("answers")
    if not isinstance(answers, list):
        return ()
    return tuple(a["answer"] for a in answers if isinstance(a, dict) and isinstance(a.get("answer"), str))


def plan_split(split: str, vqa_root: str, images: str, annotations: dict[int, dict[str, Any]] | None,
               answer_to_label: dict[str, int], dropped: SkipLog) -> list[VqaImageRecord]:
    """The split's images with their questions; only ``train`` drops unanswerable ones."""
    questions = _list_of(vqa_root, QUESTION_FILES[split], "questions", f"{split} questions")
    folder = IMAGE_FOLDERS[split]
    per_image: dict[int, list[VqaQuestion]] = {}
    for i, q in enumerate(questions):
        text = clean_text(q.get("question")) if isinstance(q, dict) else None
        if text is None or not isinstance(q.get("question_id"), int) or not isinstance(q.get("image_id"), int):
            dropped.add("malformed_question", f"{split}[{i}]")
            continue
        qid = q["question_id"]
        answers: tuple[str, ...] = ()
        labels: tuple[int, ...] = ()
        scores: tuple[float, ...] = ()
        if annotations is not None:
            annotation = annotations.get(qid)
            if annotation is None:
                dropped.add("no_annotation", qid)
                continue
            answers = _raw_answers(annotation)
            label_list, score_list = answer_targets(answers, answer_to_label)
            labels, scores = tuple(label_list), tuple(score_list)
        per_image.setdefault(q["image_id"], []).append(VqaQuestion(qid, text, answers, labels, scores))
    records = [VqaImageRecord(str(image_id), os.path.join(images, folder, f"COCO_{folder}_{image_id:012d}.jpg"),
                              tuple(qs)) for image_id, qs in per_image.items()]
    return answerable_only(records, dropped) if split == "train" else records


def answerable(record: VqaImageRecord) -> bool:
    return any(q.labels for q in record.questions)


def answerable_only(records: list[VqaImageRecord], dropped: SkipLog) -> list[VqaImageRecord]:
    """Training records: questions with no answer in the vocabulary dropped (counted), then
    images left without questions."""
    kept = []
    for record in records:
        for q in record.questions:
            if not q.labels:
                dropped.add("no_answer_in_vocab", q.question_id)
        if answerable(record):
            kept.append(dataclasses.replace(record, questions=tuple(q for q in record.questions if q.labels)))
    return kept


def vlmo_cut(val: list[VqaImageRecord], holdout: int) -> int:
    """Where the held-out minival starts: at the ``holdout``-th last image with an answerable
    question (the images VLMo holds out); every image from there on, answerable or not, is kept."""
    positions = [i for i, record in enumerate(val) if answerable(record)]
    keep = len(positions) - holdout
    return positions[keep] if keep > 0 else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vqa-root", required=True, help="folder with the official VQA v2 json files")
    parser.add_argument("--images", required=True, help="COCO root with train2014/ val2014/ test2015/")
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS))
    parser.add_argument("--vlmo-split", action="store_true",
                        help="move all val images but the last --vlmo-holdout with an answerable question into "
                             "train (VLMo recipe)")
    parser.add_argument("--vlmo-holdout", type=positive_int, default=1000,
                        help="val images kept for validation with --vlmo-split (default 1000)")
    parser.add_argument("--min-answer-count", type=positive_int, default=MIN_ANSWER_COUNT)
    add_common_args(parser)
    return parser


def plan(args: argparse.Namespace) -> tuple[list[SplitJob], dict[str, str]]:
    require_dir(args.images, "COCO image root")
    annotations = load_annotations(args.vqa_root)
    answers = vocabulary(annotations, args.min_answer_count)
    answer_to_label = {a: i for i, a in enumerate(answers)}
    splits = [s for s in SPLITS if s in args.splits or (args.vlmo_split and s in ("train", "val"))]
    dropped = {s: SkipLog() for s in splits}
    records = {s: plan_split(s, args.vqa_root, args.images, annotations.get(s), answer_to_label, dropped[s])
               for s in splits}
    if args.vlmo_split:
        cut = vlmo_cut(records["val"], args.vlmo_holdout)
        records["train"] += answerable_only(records["val"][:cut], dropped["train"])
        records["val"] = records["val"][cut:]
    build = functools.partial(build_vqa_rows, max_image_side=args.max_image_side)
    jobs = [SplitJob(s, VQA, records[s], build, dropped=dropped[s]) for s in splits]
    vocab = {ANSWER_VOCAB_NAME: answer_vocab_to_json(answers, args.min_answer_count)}
    return jobs, vocab


CONVERTER = Converter("convert_vqa", build_parser, plan)
main = CONVERTER.main

if __name__ == "__main__":
    raise SystemExit(CONVERTER.cli())
