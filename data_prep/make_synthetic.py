"""The embedded default dataset: procedurally drawn scenes for every stage and task.

    python data_prep/make_synthetic.py --out data/synthetic [--seed 0] [--image-size 64]

Writes, through the same writer as every converter (all images PNG):

    image_text/{train,val,test}   five paraphrased captions per image (source "synthetic")
    vqa/{train,val,test}          questions per image, 10 annotator answers, labels and
                                  soft scores computed exactly as convert_vqa.py does
    vqa/test-dev                  the test questions WITHOUT answers, as the real test-dev
                                  (what a submission file is made from)
    vqa/answer_vocab.json         every answer seen in train+val (--min-answer-count 1)
    nlvr2/{train,dev,test1}       balanced true/false statements about two images
    text/train                    caption-like sentences and short paragraphs
    images/train                  the training images alone

With ``--recipe-names`` the same data is also written under every name the
shipped YAMLs read below ``variables.data`` (``coco/train``, ``vg``, ``sbu``,
``cc3m``, ``web/laion``, ``imagenet21k``, ``wikipedia``, ...; ``RECIPE_NAMES``),
so ``--out <root>/mds`` and ``variables.root=<root>`` run any recipe (README:
"Trying a recipe small").

Scenes are unique within a split, so no two images of a split share a
caption. Unlike real VQA, the synthetic test split keeps its answers
(test-dev has none). The same ``--seed`` gives the same bytes.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
from dataclasses import dataclass
from typing import Any

from data_prep.cli import Converter, add_common_args, positive_int
from data_prep.common import ConversionError
from data_prep.report import SkipLog
from data_prep.synthetic_scenes import (
    Scene,
    annotator_answers,
    captions,
    nlvr2_example,
    paragraph,
    questions,
    random_scene,
    render_scene,
)
from data_prep.vqa_rows import ANSWER_VOCAB_NAME, VqaQuestion, vqa_rows
from data_prep.writer import SampleContext, SplitJob
from vlmo_composer.data.schema import IMAGE, IMAGE_TEXT, NLVR2, TEXT, VQA
from vlmo_composer.data.vqa_answers import answer_targets, answer_vocab_to_json, build_answer_vocab

SPLITS = ("train", "val", "test")
NLVR2_SPLITS = {"train": "train", "val": "dev", "test": "test1"}
MAX_SCENES_PER_SPLIT = 100_000  # well below the ~207k distinct scenes
# Each name a shipped YAML reads under variables.data (yamls/**) -> the synthetic split written there.
# vqa/* and nlvr2/* already have the recipes' names.
RECIPE_NAMES = {
    **{f"{d}/{s}": f"image_text/{s}" for d in ("coco", "f30k") for s in SPLITS},
    **{d: "image_text/train" for d in ("vg", "sbu", "cc3m", "web/laion", "web/coyo")},
    "imagenet21k": "images/train",
    "wikipedia": "text/train",
    "bookcorpus": "text/train",
}


def _rng(seed: int, *parts: Any) -> random.Random:
    # String seeds are hashed with sha512: stable across runs and Python versions.
    return random.Random("/".join(str(p) for p in (seed, *parts)))


@dataclass(frozen=True)
class SceneRecord:
    record_id: str
    scene: Scene
    render_seed: str
    image_size: int
    questions: tuple[VqaQuestion, ...] = ()

    def png(self) -> bytes:
        return render_scene(self.scene, self.image_size, self.render_seed)


@dataclass(frozen=True)
class PairRecord:
    record_id: str
    scenes: tuple[Scene, Scene]
    render_seeds: tuple[str, str]
    image_size: int
    sentence: str
    label: int


@dataclass(frozen=True)
class TextRecord:
    record_id: str
    text: str


def build_image_text(record: SceneRecord, context: SampleContext) -> dict[str, Any]:
    return {"image": record.png(), "captions": captions(record.scene), "image_id": record.record_id,
            "source": "synthetic", "width": record.image_size, "height": record.image_size}


def build_vqa(record: SceneRecord, context: SampleContext) -> list[dict[str, Any]]:
    return vqa_rows(record.png(), record.record_id, record.questions)


def build_image(record: SceneRecord, context: SampleContext) -> dict[str, Any]:
    return {"image": record.png()}


def build_nlvr2(record: PairRecord, context: SampleContext) -> dict[str, Any]:
    images = [render_scene(s, record.image_size, seed) for s, seed in zip(record.scenes, record.render_seeds)]
    return {"image_0": images[0], "image_1": images[1], "sentence": record.sentence,
            "label": record.label, "identifier": record.record_id}


def build_text(record: TextRecord, context: SampleContext) -> dict[str, Any]:
    return {"text": record.text}


def unique_scenes(seed: int, split: str, count: int) -> list[Scene]:
    if count > MAX_SCENES_PER_SPLIT:
        raise ConversionError(f"at most {MAX_SCENES_PER_SPLIT} distinct scenes per split, asked for {count}")
    rng = _rng(seed, "scenes", split)
    seen: set[Scene] = set()
    scenes: list[Scene] = []
    while len(scenes) < count:
        scene = random_scene(rng)
        if scene not in seen:
            seen.add(scene)
            scenes.append(scene)
    return scenes


def scene_records(seed: int, split: str, scenes: list[Scene], size: int) -> list[SceneRecord]:
    return [SceneRecord(f"{split}-{i:06d}", s, f"{seed}/render/{split}/{i}", size) for i, s in enumerate(scenes)]


def plan_vqa(seed: int, records: dict[str, list[SceneRecord]], per_image: int, min_count: int,
             dropped: dict[str, SkipLog]) -> tuple[dict[str, list[SceneRecord]], list[str]]:
    """Attach questions to every scene; vocabulary, labels and scores as convert_vqa makes them."""
    drafts: dict[str, list[list[tuple[str, str, list[str]]]]] = {}
    for split, recs in records.items():
        drafts[split] = []
        for i, r in enumerate(recs):
            rng = _rng(seed, "vqa", split, i)
            drafts[split].append([(qa.question, qa.answer, annotator_answers(qa, rng))
                                  for qa in questions(r.scene, rng, per_image)])
    vocab = build_answer_vocab((answer for split in ("train", "val") for qs in drafts[split] for _, answer, _ in qs),
                               min_count)
    answer_to_label = {a: i for i, a in enumerate(vocab)}
    planned: dict[str, list[SceneRecord]] = {}
    for s, (split, recs) in enumerate(records.items()):
        planned[split] = []
        for i, (r, qs) in enumerate(zip(recs, drafts[split])):
            items = []
            for j, (question, _, answers) in enumerate(qs):
                question_id = (s + 1) * 10**8 + i * 10 + j
                labels, scores = answer_targets(answers, answer_to_label)
                if not labels and split == "train":  # as convert_vqa: only training drops them
                    dropped[split].add("no_answer_in_vocab", question_id)
                    continue
                items.append(VqaQuestion(question_id, question, tuple(answers), tuple(labels), tuple(scores)))
            planned[split].append(SceneRecord(r.record_id, r.scene, r.render_seed, r.image_size, tuple(items)))
    return planned, vocab


def without_answers(record: SceneRecord) -> SceneRecord:
    """The record's questions as a test split carries them: no answers, labels or scores."""
    unanswered = tuple(VqaQuestion(q.question_id, q.question, (), (), ()) for q in record.questions)
    return dataclasses.replace(record, questions=unanswered)


def plan_nlvr2(seed: int, split: str, count: int, size: int) -> list[PairRecord]:
    records = []
    for i in range(count):
        rng = _rng(seed, "nlvr2", split, i)
        label = i % 2 == 0  # exactly balanced
        a, b, sentence = nlvr2_example(rng, label)
        seeds = (f"{seed}/nlvr2/{split}/{i}/0", f"{seed}/nlvr2/{split}/{i}/1")
        # NLVR2 identifier layout {split}-{set}-{pair}-{sentence}: every pair is its own set.
        records.append(PairRecord(f"{split}-{i}-0-0", (a, b), seeds, size, sentence, int(label)))
    return records


def plan_text(seed: int, count: int) -> list[TextRecord]:
    records = []
    for i in range(count):
        rng = _rng(seed, "text", i)
        scenes = [random_scene(rng) for _ in range(rng.choice((1, 1, 2, 3)))]
        records.append(TextRecord(f"text-{i:06d}", paragraph(scenes)))
    return records


def plan_jobs(seed: int, counts: dict[str, int], size: int, questions_per_image: int,
              min_answer_count: int = 1, recipe_names: bool = False) -> tuple[list[SplitJob], dict[str, str]]:
    scenes = {split: scene_records(seed, split, unique_scenes(seed, split, counts[split]), size) for split in SPLITS}
    dropped = {split: SkipLog() for split in SPLITS}
    with_questions, vocab = plan_vqa(seed, scenes, questions_per_image, min_answer_count, dropped)
    jobs = [SplitJob(f"image_text/{s}", IMAGE_TEXT, scenes[s], build_image_text) for s in SPLITS]
    jobs += [SplitJob(f"vqa/{s}", VQA, with_questions[s], build_vqa, dropped=dropped[s]) for s in SPLITS]
    jobs.append(SplitJob("vqa/test-dev", VQA, [without_answers(r) for r in with_questions["test"]], build_vqa))
    jobs += [SplitJob(f"nlvr2/{NLVR2_SPLITS[s]}", NLVR2, plan_nlvr2(seed, NLVR2_SPLITS[s], counts[s], size),
                      build_nlvr2) for s in SPLITS]
    jobs.append(SplitJob("text/train", TEXT, plan_text(seed, counts["train"]), build_text))
    jobs.append(SplitJob("images/train", IMAGE, scenes["train"], build_image))
    if recipe_names:
        by_split = {job.split: job for job in jobs}
        jobs += [dataclasses.replace(by_split[source], split=name) for name, source in RECIPE_NAMES.items()]
    return jobs, {f"vqa/{ANSWER_VOCAB_NAME}": answer_vocab_to_json(vocab, min_answer_count)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=positive_int, default=64)
    parser.add_argument("--train", type=positive_int, default=4000, help="train images (and pairs, texts)")
    parser.add_argument("--val", type=positive_int, default=200, help="val images (and NLVR2 dev pairs)")
    parser.add_argument("--test", type=positive_int, default=200, help="test images (and NLVR2 test1 pairs)")
    parser.add_argument("--questions-per-image", type=int, choices=range(1, 8), default=4)
    parser.add_argument("--min-answer-count", type=positive_int, default=1,
                        help="answer vocabulary threshold (VQA v2 uses 9; the synthetic answer space is "
                             "small, so every answer seen in train+val is kept by default)")
    parser.add_argument("--recipe-names", action="store_true",
                        help="also write the data under the names the shipped YAMLs read (coco/train, vg, "
                             "sbu, cc3m, imagenet21k, wikipedia, ...), to try any recipe small")
    add_common_args(parser, image_args=False)
    return parser


def plan(args: argparse.Namespace) -> tuple[list[SplitJob], dict[str, str]]:
    counts = {"train": args.train, "val": args.val, "test": args.test}
    return plan_jobs(args.seed, counts, args.image_size, args.questions_per_image, args.min_answer_count,
                     args.recipe_names)


CONVERTER = Converter("make_synthetic", build_parser, plan)
main = CONVERTER.main

if __name__ == "__main__":
    raise SystemExit(CONVERTER.cli())
