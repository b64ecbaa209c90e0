"""Two real processes (gloo) give exactly the single-process metrics.

Each rank updates with its own shard: shards are uneven, one sample of each
task is on both ranks (sampler padding), ids exceed float32 precision, and
one rank never updates VQAScore at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distributed import run_distributed

from vlmo_composer.metrics import (
    NLVR2Accuracy,
    RetrievalRecall,
    VQAAccuracy,
    VQAScore,
    gather_predictions,
    retrieval_recall,
    vqa_accuracy,
    write_vqa_submission,
)

pytestmark = pytest.mark.distributed

WORLD_SIZE = 2
NUM_IMAGES, CAPTIONS_PER_IMAGE, DIM = 7, 5, 6
NUM_QUESTIONS, NUM_ANSWERS = 9, 12
SPAWN_TIMEOUT_S = 150


def scenario() -> dict:
    """The whole evaluation set, identical in every process."""
    g = torch.Generator().manual_seed(0)
    text_to_image = torch.arange(NUM_IMAGES).repeat_interleave(CAPTIONS_PER_IMAGE)
    text_to_image = text_to_image[torch.randperm(len(text_to_image), generator=g)]
    image_ids = torch.randperm(1000, generator=g)[:NUM_IMAGES] + 2**40
    words = ["yes", "no", "2", "two", "red", "a dog", "dog"]
    gts = [
        [words[i] for i in torch.randint(0, len(words), (10,), generator=g)]
        for _ in range(NUM_QUESTIONS)
    ]
    return {
        # Small integer features: exact scores, so every summation order agrees.
        "image_feats": torch.randint(-2, 3, (NUM_IMAGES, DIM), generator=g).float(),
        "image_ids": image_ids,
        "text_feats": torch.randint(-2, 3, (len(text_to_image), DIM), generator=g).float(),
        "text_to_image": text_to_image,
        "text_image_ids": image_ids[text_to_image],
        "text_ids": torch.randperm(1000, generator=g)[: len(text_to_image)] + 2**33,
        "question_ids": [262148000 + 1001 * q for q in range(NUM_QUESTIONS)],
        "preds": [gt[0] if q % 3 else "Two" for q, gt in enumerate(gts)],
        "gts": gts,
        "logits": torch.randn(NUM_QUESTIONS, NUM_ANSWERS, generator=g),
        "targets": (torch.rand(NUM_QUESTIONS, NUM_ANSWERS, generator=g) * 4).floor() * 0.3,
        "identifiers": [f"dev-{s}-{p}-{k}" for s in range(2) for p in range(3) for k in range(2)],
        "nlvr2_preds": torch.randint(0, 2, (12,), generator=g),
        "nlvr2_labels": torch.randint(0, 2, (12,), generator=g),
    }


def update_rank(metrics: dict, data: dict, rank: int) -> None:
    """The updates one rank makes; running both ranks' updates in one process is the reference."""

    def images(rows: slice) -> dict:
        return {"image_feats": data["image_feats"][rows], "image_ids": data["image_ids"][rows]}

    def texts(rows: slice) -> dict:
        return {
            "text_feats": data["text_feats"][rows],
            "text_image_ids": data["text_image_ids"][rows],
            "text_ids": data["text_ids"][rows],
        }

    def questions(rows: slice) -> tuple:
        return data["preds"][rows], data["gts"][rows], data["question_ids"][rows]

    def vqa_logits(rows: slice) -> tuple:
        return data["logits"][rows], data["targets"][rows], data["question_ids"][rows]

    def nlvr2(rows: slice) -> tuple:
        d = data
        return d["nlvr2_preds"][rows], d["nlvr2_labels"][rows], d["identifiers"][rows]

    if rank == 0:
        metrics["retrieval"].update(**images(slice(0, 5)))
        metrics["retrieval"].update(**texts(slice(0, 10)))
        metrics["retrieval"].update(**texts(slice(10, 20)))
        metrics["vqa_accuracy"].update(*questions(slice(0, 6)))
        metrics["vqa_score"].update(*vqa_logits(slice(0, NUM_QUESTIONS)))
        metrics["vqa_score"].update(*vqa_logits(slice(2, 3)))
        metrics["nlvr2"].update(*nlvr2(slice(0, 7)))
    else:
        metrics["retrieval"].update(
            image_feats=torch.empty(0, DIM), image_ids=[], **texts(slice(18, 25))
        )
        metrics["retrieval"].update(**images(slice(4, 7)), **texts(slice(25, 35)))
        metrics["vqa_accuracy"].update(*questions(slice(5, 9)))
        metrics["nlvr2"].update(*nlvr2(slice(6, 12)))


def new_metrics() -> dict:
    return {
        "retrieval": RetrievalRecall(chunk_size=4),
        "vqa_accuracy": VQAAccuracy(),
        "vqa_score": VQAScore(),
        "nlvr2": NLVR2Accuracy(),
    }


def as_floats(computed) -> dict | float:
    if isinstance(computed, dict):
        return {k: v.item() for k, v in computed.items()}
    return computed.item()


def worker(rank: int, world: int, out_dir: str) -> dict:
    data = scenario()
    metrics = new_metrics()
    update_rank(metrics, data, rank)
    results = {name: as_floats(metric.compute()) for name, metric in metrics.items()}
    shard = slice(0, 5) if rank == 0 else slice(4, 9)
    ids, answers = gather_predictions(data["question_ids"][shard], data["preds"][shard])
    results["gathered_ids"] = ids
    if rank == 0:
        write_vqa_submission(Path(out_dir) / "submission.json", ids, answers)
    return results


@pytest.fixture(scope="module")
def distributed_run(tmp_path_factory) -> tuple[Path, list]:
    out_dir = tmp_path_factory.mktemp("metrics_dist")
    return out_dir, run_distributed(worker, world=WORLD_SIZE, args=(str(out_dir),), timeout_s=SPAWN_TIMEOUT_S)


@pytest.fixture(scope="module")
def single_process() -> dict:
    data = scenario()
    metrics = new_metrics()
    for rank in range(WORLD_SIZE):
        update_rank(metrics, data, rank)
    return {name: as_floats(metric.compute()) for name, metric in metrics.items()}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("rank", range(WORLD_SIZE))
@pytest.mark.parametrize("name", ["retrieval", "vqa_accuracy", "vqa_score", "nlvr2"])
def test_every_rank_equals_single_process(distributed_run, single_process, rank, name):
    results = distributed_run[1][rank]
    assert results[name] == single_process[name]


def test_single_process_reference_is_the_plain_computation(single_process):
    data = scenario()
    expected = retrieval_recall(data["image_feats"], data["text_feats"], data["text_to_image"])
    assert single_process["retrieval"] == expected
    accuracy = [vqa_accuracy(p, gt) for p, gt in zip(data["preds"], data["gts"], strict=True)]
    assert single_process["vqa_accuracy"] == pytest.approx(sum(accuracy) / len(accuracy), abs=1e-12)
    best = data["logits"].argmax(1)
    score = data["targets"][torch.arange(NUM_QUESTIONS), best].double().mean().item()
    assert single_process["vqa_score"] == pytest.approx(score, abs=1e-12)
    assert 0 < single_process["vqa_accuracy"] < 1 and 0 < single_process["retrieval"]["r_mean"] < 1


@pytest.mark.timeout(180)
def test_predictions_gathered_into_one_submission(distributed_run):
    data = scenario()
    expected_ids = data["question_ids"][0:5] + data["question_ids"][4:9]
    out_dir, results = distributed_run
    for rank in range(WORLD_SIZE):
        assert results[rank]["gathered_ids"] == expected_ids
    submission = json.loads((out_dir / "submission.json").read_text())
    assert submission == [
        {"question_id": q, "answer": a}
        for q, a in zip(data["question_ids"], data["preds"], strict=True)
    ]
