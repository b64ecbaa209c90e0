"""The shipped VQA recipe on synthetic data: a submission from test-dev only, and validation
reporting the official accuracy next to the soft VQA score."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from streaming import StreamingDataset

from vlmo_composer.training.builders import build_task, resolve_config
from vlmo_composer.checkpoints import save_safetensors
from vlmo_composer.training.config import load_config
from vlmo_composer.evaluation.cli import evaluate, load_weights, main
from vlmo_composer.evaluation.vqa_submission import write_split_submission
from vlmo_composer.metrics import vqa_accuracy

ROOT = Path(__file__).resolve().parents[2]
RECIPE = str(ROOT / "yamls/finetune/vqa_base.yaml")
TINY = ["task.model.size=small", "task.model.hidden_size=64", "task.model.num_layers=2", "task.model.num_heads=2",
        "task.model.ffn_size=128", "task.model.vl_ffn_start=1", "task.model.max_text_len=40",
        "device_eval_batch_size=16"]


@pytest.fixture(scope="module")
def recipe(synthetic_data, tmp_path_factory) -> tuple[list[str], str]:
    """The recipe's overrides for the synthetic data and an exported tiny model to evaluate."""
    overrides = [f"variables.root={synthetic_data.parent}", "variables.image_size=64", *TINY]
    cfg = load_config(RECIPE, overrides)
    torch.manual_seed(0)
    task = build_task({k: v for k, v in cfg.task.items() if k != "init_from"})
    # Untrained, but leaning to the commonest val answer, so that some predictions are right.
    common = Counter(a for row in rows(synthetic_data / "vqa/val") for a in row["answers"]).most_common(1)[0][0]
    with torch.no_grad():
        task.model.vqa_classifier[-1].bias[task.answers.index(common)] += 3.0
    exported = save_safetensors(task.model, tmp_path_factory.mktemp("vqa_model") / "exported")
    return overrides, str(exported)


def rows(split: Path) -> list[dict]:
    dataset = StreamingDataset(local=str(split), batch_size=1)
    return [dataset[i] for i in range(dataset.num_samples)]


def question_ids(split: Path) -> list[int]:
    return sorted(row["question_id"] for row in rows(split))


def test_submission_comes_from_test_dev(recipe, synthetic_data, tmp_path, capsys):
    overrides, exported = recipe
    out = tmp_path / "vqa_test_dev.json"
    assert main([RECIPE, *overrides, "--exported", exported, "--vqa-submission", str(out), "--split", "test-dev"]) == 0
    written = json.loads(out.read_text())
    assert [e["question_id"] for e in written] == question_ids(synthetic_data / "vqa/test-dev")
    vocab = json.loads((synthetic_data / "vqa/answer_vocab.json").read_text())["answers"]
    assert all(set(e) == {"question_id", "answer"} and e["answer"] in vocab for e in written)
    assert f"test-dev: {len(written)} answers written to {out}" in capsys.readouterr().out


def test_submission_refuses_a_split_with_answers_or_without_a_split(recipe, tmp_path, capsys):
    overrides, exported = recipe
    out = tmp_path / "vqa_val.json"
    args = [RECIPE, *overrides, "--exported", exported, "--vqa-submission", str(out)]
    assert main([*args, "--split", "val"]) == 2
    err = capsys.readouterr().err
    assert "split 'val' has annotator answers" in err and "--allow-answers" in err and not out.exists()
    assert main([*args, "--split", "test-std"]) == 2
    assert "no loader labelled 'test-std'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2 and "--vqa-submission needs --split" in capsys.readouterr().err


def test_validation_reports_official_accuracy_of_its_predictions(recipe, synthetic_data, tmp_path):
    overrides, exported = recipe
    cfg = load_config(RECIPE, overrides)
    val = synthetic_data / "vqa/val"
    task = build_task(resolve_config(cfg).without_init())  # also gives every loader the model's shapes
    cfg.eval_loaders[0].num_workers = 0
    load_weights(task, exported, "safetensors")
    results = evaluate(cfg, "exported", task, torch.device("cpu"))["val"]
    assert set(results) == {"VQAScore", "VQAAccuracy", "samples", "wall_s"}
    assert results["samples"] == len(rows(val))
    # The same predictions written as a file (--allow-answers) and scored against the raw answers.
    path = tmp_path / "val.json"
    write_split_submission(cfg, task, torch.device("cpu"), "val", str(path), allow_answers=True)
    predictions = {e["question_id"]: e["answer"] for e in json.loads(path.read_text())}
    accuracy = [vqa_accuracy(predictions[row["question_id"]], row["answers"]) for row in rows(val)]
    assert len(accuracy) == len(predictions)
    assert results["VQAAccuracy"] == pytest.approx(sum(accuracy) / len(accuracy), abs=1e-9)
    assert 0 < results["VQAAccuracy"] < 1 and 0 < results["VQAScore"] < 1
