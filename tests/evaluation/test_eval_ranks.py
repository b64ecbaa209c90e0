"""Retrieval evaluation on several ranks gives one process's numbers (issue 19; the other
tasks: test_eval_ranks_tasks.py).

Before the fix, ``composer -n 2 eval.py`` scored each rank's share of the split as if it
were the whole (TR@1 2.94 against 1.48, chance 1/102 instead of 1/203), with exit 0, and
``composer -n 2 train.py yamls/quickstart.yaml`` died at its first step because each rank
trimmed text padding to its own longest caption.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from distributed import free_port, run_distributed
from evaluation.test_retrieval_rerank import BATCH, NUM_IMAGES, all_captions_batches
from inference.inference_helpers import randomised, tiny_config

from vlmo_composer import VLMo
from vlmo_composer.evaluation import cli as evaluate
from vlmo_composer.evaluation.retrieval import evaluate_retrieval, retrieval_record

REPO = Path(__file__).resolve().parents[2]


def _model() -> VLMo:
    torch.manual_seed(0)
    return randomised(VLMo(tiny_config(init_std=0.3)), seed=1)


def _rank_share(rank: int, world: int) -> list[dict]:
    """An uneven split as a distributed sampler makes it: rank 0 reads two batches, rank 1 one
    batch plus a repeat of an image rank 0 also read (padding to equal shares)."""
    batches = all_captions_batches(seed=2)
    if rank == 0:
        return batches[:2]
    repeat = {k: v[:1] for k, v in batches[0].items()}
    return [batches[2], repeat]


def _evaluate_share(rank: int, world: int) -> dict:
    return retrieval_record(evaluate_retrieval(_model(), lambda: _rank_share(rank, world), torch.device("cpu"), rerank_k=4))


def test_two_ranks_score_the_whole_split_as_one_process():
    assert NUM_IMAGES == 3 * BATCH
    one = retrieval_record(evaluate_retrieval(_model(), lambda: all_captions_batches(seed=2), torch.device("cpu"), rerank_k=4))
    ranks = run_distributed(_evaluate_share, world=2)
    for record in ranks:
        assert record["chance_ir_r1"] == pytest.approx(1 / NUM_IMAGES)
        for key in ("tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10"):
            assert record[key] == pytest.approx(one[key], abs=1e-9), key
            assert record["reranked"][key] == pytest.approx(one["reranked"][key], abs=1e-9), key
        assert record["reranked"]["changed_top1"] == one["reranked"]["changed_top1"]


def _launch(args: list[str], tmp_path: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "composer.cli.launcher", "-n", "2", "--master_port", str(free_port()),
                           "--stdout", str(tmp_path / "rank{rank}.out"), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.distributed
def test_quickstart_trains_and_evaluates_on_two_ranks(synthetic_data: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    """The shipped quick-start YAML on 2 ranks: trains (text trimmed to the global longest
    caption) and evaluates with the numbers of one process (test split of 16 images: 8 per rank)."""
    overrides = [f"variables.data={synthetic_data}", "max_duration=2ba", "global_train_batch_size=8",
                 "eval_interval=1ep", "save_interval=2ba", f"save_folder={tmp_path}/ckpt"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    train = _launch([str(REPO / "train.py"), str(REPO / "yamls/quickstart.yaml"), *overrides], tmp_path, env)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    assert (tmp_path / "ckpt" / "latest-rank0.pt").exists()

    eval_args = [str(REPO / "yamls/quickstart.yaml"), "--rerank-k", "4", *overrides]
    monkeypatch.chdir(tmp_path)
    # One process: eval.py's main in this one (a new interpreter would only import torch again).
    assert evaluate.main([*eval_args, "--output", str(tmp_path / "one.json")]) == 0
    two = _launch([str(REPO / "eval.py"), *eval_args, "--output", str(tmp_path / "two.json")], tmp_path, env)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    one, both = (json.loads((tmp_path / name).read_text()) for name in ("one.json", "two.json"))
    numbers = [k for k, v in one.items() if isinstance(v, (int, float))]
    assert any(k.endswith("tr_r1") for k in numbers) and any("chance" in k for k in numbers), one
    for key in numbers:
        if "seconds" not in key and not key.endswith("_s") and key != "world_size":
            assert both[key] == pytest.approx(one[key], abs=1e-9), key
    assert (one["world_size"], both["world_size"]) == (1, 2)
    checkpoint = {"path": str(tmp_path / "ckpt" / "latest-rank0.pt"), "kind": "composer", "batch": 2}
    assert one["checkpoint"] == both["checkpoint"]
    assert {k: v for k, v in one["checkpoint"].items() if k != "trained_on"} == checkpoint
    assert one["checkpoint"]["trained_on"]["train"][0]["location"].endswith("image_text/train")  # its data record
    logs = two.stdout + "".join(p.read_text() for p in tmp_path.glob("rank*.out"))
    assert "evaluated on 2 ranks" in logs and "samples/s)" in logs

