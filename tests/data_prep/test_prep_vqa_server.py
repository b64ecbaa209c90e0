"""VQA val as the evaluation server counts it: every val question, answerable or not.

Official VQA v2 files (the layouts of ``test_vqa_score``) go through
``data_prep/convert_vqa.py``, the val shards through ``VQADataset`` and the VQA
task's metric update; ``VQAAccuracy`` must then equal the official evaluator's
steps (``vqa-score``, the reimplementation of GT-Vision-Lab's ``vqaEval.py``)
on the whole val question set, while training still drops the questions with no
answer in the vocabulary, as VLMo does.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from inference.inference_helpers import TINY_MODEL
from PIL import Image
from evaluation.test_vqa_score import QUESTIONS, official_files, write_results

from data_prep import convert_vqa
from vlmo_composer.data import VQADataset
from vlmo_composer.data.vqa_answers import answer_vocab_from_json
from vlmo_composer.evaluation.vqa_score import score_files
from vlmo_composer.metrics import VQAAccuracy, VQAScore
from vlmo_composer.tasks.vqa import VQAConfig, VQATask

# Rows as QUESTIONS: (question_id, image_id, question_type, answer_type, answers, prediction, accuracy).
TRAIN = [
    (1000, 1, "is the", "yes/no", ["yes"] * 10, None, None),
    (1001, 1, "is the", "yes/no", ["no"] * 10, None, None),
    (1002, 2, "what color is the", "other", ["blue"] * 10, None, None),
    (1003, 2, "how many", "number", ["2"] * 10, None, None),
    (1004, 2, "what animal is", "other", ["zebra"] * 10, None, None),  # "zebra" seen once: out of the vocabulary
]
# Majority answers (normalised) over train + val, kept if seen twice, in first-seen order:
VOCAB = ["yes", "no", "blue", "2"]
# Val: test_vqa_score's questions, with an image whose questions are all out of the vocabulary in
# the middle (question file order). Every prediction is a vocabulary answer, as a model's is.
IMAGE_WITHOUT_TARGETS = [
    # Raw "Two" is not the vocabulary's "2" (targets count raw answers), so no target; the official
    # evaluator normalises disagreeing answers ("Two" -> "2"): 6 of 10 match, accuracy 1.
    (393226000, 393226, "how many", "number", ["Two"] * 6 + ["five"] * 4, "2", 1.0),
    (393226001, 393226, "what color is the", "other", ["purple"] * 10, "blue", 0.0),
]
VAL = QUESTIONS[:3] + IMAGE_WITHOUT_TARGETS + QUESTIONS[3:]
WITHOUT_TARGETS = [393226000, 393226001, 393225000]  # in file order; 393225000: ten "4", not in the vocabulary
# question_id -> (a vocabulary answer predicted for it, its official accuracy)
PREDICTED = {
    262148000: ("yes", 1.0), 262148001: ("no", 1.0),  # 4 "no" of 10: every leave-one-out set has >= 3
    262148002: ("2", 0.3), 393226000: ("2", 1.0), 393226001: ("blue", 0.0),
    393225000: ("2", 0.0), 393225001: ("blue", 1.0), 393225002: ("yes", 0.0),
}
SERVER_ACCURACY = 4.3 / 8  # every val question
# VQAScore, the soft target of the predicted label: 1 + 1 + 0.3 + 1 over 8 (no target counts 0).
SOFT_SCORE = 3.3 / 8


def jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (seed % 256, 40, 90)).save(out, format="JPEG")
    return out.getvalue()


def write_vqa_v2(root: Path) -> Path:
    """Official train2014 + val2014 files (flat, as the zips unpack) and the COCO images they name."""
    vqa = root / "vqa"
    vqa.mkdir(parents=True)
    official_files(vqa, TRAIN, "train2014")
    official_files(vqa, VAL, "val2014")
    for folder, rows in (("train2014", TRAIN), ("val2014", VAL)):
        for image_id in {row[1] for row in rows}:
            path = root / "coco" / folder / f"COCO_{folder}_{image_id:012d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(jpeg(image_id))
    return vqa


def convert(root: Path, *extra: str) -> dict:
    reports = convert_vqa.main(["--vqa-root", str(root / "vqa"), "--images", str(root / "coco"),
                                "--out", str(root / "out"), "--min-answer-count", "2", "--splits", "train", "val",
                                "--no-progress", *extra])
    return {r.split: r for r in reports}


def dropped(report) -> dict[str, list[str]]:
    return {reason: entry.first_ids for reason, entry in report.dropped.reasons.items()}


def test_val_accuracy_is_the_servers_over_every_val_question(tmp_path, read_mds):
    write_vqa_v2(tmp_path)
    reports = convert(tmp_path)
    out = tmp_path / "out"
    assert answer_vocab_from_json((out / "answer_vocab.json").read_text()) == VOCAB

    # Training drops the question with no answer in the vocabulary (it has no target), and says so.
    assert [r["question_id"] for r in read_mds(out / "train")] == [1000, 1001, 1002, 1003]
    assert dropped(reports["train"]) == {"no_answer_in_vocab": ["1004"]}
    # Val keeps every question of the official file, in its order, the ones without a target too.
    val_rows = read_mds(out / "val")
    assert [r["question_id"] for r in val_rows] == [row[0] for row in VAL]
    assert dropped(reports["val"]) == {}
    assert [r["question_id"] for r in val_rows if not r["labels"]] == WITHOUT_TARGETS
    assert all(r["scores"] == [] and len(r["answers"]) == 10 for r in val_rows if not r["labels"])

    # The val shards through the dataset and the VQA task's metric update, as in fine-tuning.
    task = VQATask(VQAConfig(model=dict(TINY_MODEL), answer_vocab=str(out / "answer_vocab.json")))
    assert task.answers == VOCAB
    dataset = VQADataset(remote=str(out / "val"), local=str(tmp_path / "cache"), num_labels=len(VOCAB),
                         image_size=32, max_text_len=16, train=False, batch_size=8)
    samples = [dataset[i] for i in range(dataset.num_samples)]
    batch = {"answers_json": [s["answers_json"] for s in samples],
             "question_id": torch.stack([s["question_id"] for s in samples])}
    labels = torch.tensor([VOCAB.index(PREDICTED[int(s["question_id"])][0]) for s in samples])
    outputs = {"logits": torch.nn.functional.one_hot(labels, len(VOCAB)).float(),
               "targets": torch.stack([s["vqa_targets"] for s in samples]), "question_ids": batch["question_id"]}
    assert outputs["targets"][[int(q) in WITHOUT_TARGETS for q in batch["question_id"]]].sum() == 0
    metrics = task.get_metrics()
    for metric in metrics.values():
        task.update_metric(batch, outputs, metric)
    accuracy = metrics["VQAAccuracy"].compute().item()
    assert isinstance(metrics["VQAScore"], VQAScore) and isinstance(metrics["VQAAccuracy"], VQAAccuracy)
    assert metrics["VQAScore"].compute().item() == pytest.approx(SOFT_SCORE, abs=1e-7)
    assert accuracy == pytest.approx(SERVER_ACCURACY, abs=1e-12)

    # The official evaluator's steps on the official files, with the answers the task predicted: it
    # needs a prediction for every annotated question (loadRes), and gives the same number.
    answers = task.predict_answers(outputs["logits"])
    results = write_results(tmp_path / "results.json", [
        {"question_id": q, "answer": a} for q, a in zip(batch["question_id"].tolist(), answers, strict=True)])
    report = score_files(str(tmp_path / "vqa" / "v2_OpenEnded_mscoco_val2014_questions.json"),
                         str(tmp_path / "vqa" / "v2_mscoco_val2014_annotations.json"), results)
    assert report["perQuestion"] == {q: round(100 * acc, 2) for q, (_, acc) in PREDICTED.items()}
    assert report["overall"] == round(100 * accuracy, 2) == 53.75
    # Scoring only the questions with a target (the old val shards) reads 66.0, not the server's 53.75.
    kept = [q for q in report["perQuestion"] if q not in WITHOUT_TARGETS]
    assert round(sum(report["perQuestion"][q] for q in kept) / len(kept), 2) == 66.0


def test_vlmo_split_moves_trainable_val_into_train_and_keeps_minival_whole(tmp_path, read_mds):
    write_vqa_v2(tmp_path)
    # Held out: the last image with an answerable question (393225) and all after it. The image
    # before it (393226) has no answerable question: it moves to train, which drops both questions.
    reports = convert(tmp_path, "--vlmo-split", "--vlmo-holdout", "1")
    out = tmp_path / "out"
    assert [r["question_id"] for r in read_mds(out / "train")] == [1000, 1001, 1002, 1003,
                                                                   262148000, 262148001, 262148002]
    assert dropped(reports["train"]) == {"no_answer_in_vocab": ["1004", "393226000", "393226001"]}
    minival = read_mds(out / "val")
    assert [r["question_id"] for r in minival] == [393225000, 393225001, 393225002]
    assert minival[0]["labels"] == [] and minival[0]["answers"] == ["4"] * 10

    # A hold-out as large as val keeps all of it.
    reports = convert(tmp_path, "--vlmo-split", "--vlmo-holdout", "2", "--overwrite")
    assert [r["question_id"] for r in read_mds(out / "val")] == [row[0] for row in VAL]
    assert dropped(reports["train"]) == {"no_answer_in_vocab": ["1004"]}
