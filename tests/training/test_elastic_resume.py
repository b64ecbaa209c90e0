"""Elastic resumption (issue 19 item 1): a quick-start run saved at 2 ranks resumes at 1 rank,
one saved at 1 rank resumes at 2 (autoresume from ``s3://``), and each trains on the samples an
uninterrupted run at its new size sees from there; a resume that changes what must not change
fails in one line, exit 2.

Runs of ``train.py yamls/quickstart.yaml`` with drop path 0.1 (and so text dropout 0.1): 48 images,
global batch 8, 6 steps per epoch, 20 steps (into epoch 4), all four runs' draws keyed by
(seed, step, sample id):

* ``two``: 2 ranks (``composer -n 2``, gloo), saving at step 8 (mid-epoch 2): the uninterrupted
  2-rank run;
* ``one``: 1 rank, in this process through ``main`` as ``train.py`` calls it: the uninterrupted
  1-rank run;
* ``resumed``: 1 rank (in this process) from ``two``'s step-8 checkpoint (2 -> 1; crosses into
  epoch 3);
* ``preempted`` then ``grown``: 1 rank writing its checkpoints to a moto S3 bucket stops at step 8
  (as a preempted job; warmup is 30 steps, so its schedule to there is the 20-step run's), and
  the same YAML relaunched at 2 ranks with ``autoresume`` finds that checkpoint on S3 (1 -> 2).

All end with the same weights within 1e-5 (measured 1.2e-7, fp32 reduction order). Before this,
the resumed run said nothing of the world size, nothing refused a changed global batch or
canonical node count, and the weights differed (1.4e-3 with per-rank ITM generators; 9e-4 with
keyed draws but per-rank MLM means; drop path and text dropout drawn per rank: see the README).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import boto3
import pytest
import torch
from distributed import free_port

from vlmo_composer.callbacks.elastic import check_resume, fit_rng_states, run_shape
from vlmo_composer.common.errors import ConfigError
from vlmo_composer.training.config import load_config
from vlmo_composer.training.dry_run import train_summary
from vlmo_composer.training.train import main

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "yamls/quickstart.yaml"
STEPS, SAVED_AT = 20, 8
WEIGHT_TOLERANCE = 1e-5
CHECKPOINT = f"ep1-ba{SAVED_AT}-rank0.pt"  # 6 steps per epoch: mid-epoch 2
FINAL = f"ep3-ba{STEPS}-rank0.pt"


def overrides(data: Path, folder: Path, name: str, save_folder: Optional[str] = None) -> list[str]:
    return [f"variables.data={data}", f"run_name={name}", f"max_duration={STEPS}ba", "global_train_batch_size=8",
            "task.model.drop_path_rate=0.1", "eval_loaders=[]", "progress_bar=false",
            f"save_folder={save_folder or folder}", f"save_interval={SAVED_AT}ba", "train_loader.num_workers=0",
            f"callbacks.sample_order_logger.path={folder}/order-rank{{rank}}.jsonl"]


def launch(args: list[str], cwd: Path, name: str, ranks: int = 2) -> str:
    """``composer -n 2 train.py yamls/quickstart.yaml ARGS`` (``python train.py ...`` at 1 rank);
    what rank 0 printed (the launcher's own output: ``--stdout``/``--stderr`` take the other
    ranks'). Launched before any run in this process: Streaming's shared memory of a dataset
    built here lives until exit and would clash with a new process's."""
    command = [sys.executable, str(REPO / "train.py"), str(QUICKSTART), *args]
    if ranks > 1:
        command[1:1] = ["-m", "composer.cli.launcher", "-n", str(ranks), "--master_port", str(free_port()),
                        "--stdout", str(cwd / f"{name}-rank{{rank}}.out"),
                        "--stderr", str(cwd / f"{name}-rank{{rank}}.err")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    others = "".join(path.read_text(errors="replace") for path in sorted(cwd.glob(f"{name}-rank*.*")))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:] + others[-2000:]
    return done.stdout + done.stderr


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state"]["model"]


def max_abs_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((x.double() - b[k].double()).abs().max().item() for k, x in a.items())


def order(folder: Path, rank: int = 0) -> dict[int, list[int]]:
    lines = (folder / f"order-rank{rank}.jsonl").read_text().splitlines()
    return {e["batch"]: e["sample_index"] for e in map(json.loads, lines)}


@pytest.mark.s3
@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.timeout(1200)
def test_runs_resumed_at_another_world_size_keep_the_sample_order_and_the_weights(
    synthetic_data, s3_bucket, tmp_path, capsys
):
    two, one, resumed = tmp_path / "two", tmp_path / "one", tmp_path / "resumed"
    preempted, grown = tmp_path / "preempted", tmp_path / "grown"
    launch(overrides(synthetic_data, two, "two"), tmp_path, "two")

    # 1 -> 2 through S3: a 1-rank run stops at step 8 with its checkpoint on S3; the same YAML at
    # 2 ranks with autoresume finds it there and carries on to step 20.
    remote = f"s3://{s3_bucket}/elastic/checkpoints"
    launch([*overrides(synthetic_data, preempted, "elastic", remote), "autoresume=true", f"max_duration={SAVED_AT}ba"],
           tmp_path, "preempted", ranks=1)
    printed = launch([*overrides(synthetic_data, grown, "elastic", remote), "autoresume=true"], tmp_path, "grown")
    assert "resumed at 2 ranks from a run saved at 1: sample order kept" in printed, printed[-3000:]

    # 2 -> 1: the 2-rank run's step-8 checkpoint resumed at 1 rank, here through ``main``.
    assert main([str(QUICKSTART), *overrides(synthetic_data, one, "one")]) == 0
    saved = two / CHECKPOINT
    resume_args = [*overrides(synthetic_data, resumed, "resumed"), f"load_path={saved}"]
    capsys.readouterr()
    assert main([str(QUICKSTART), *resume_args]) == 0
    out = capsys.readouterr()
    assert "resumed at 1 rank from a run saved at 2: sample order kept" in out.out + out.err, out.out[-3000:]

    # Per global step, the 2-rank run's two halves together are the 1-rank run's batch; the
    # 2 -> 1 run trains on exactly the 1-rank run's batches after the checkpoint, and the 1 -> 2
    # run's ranks on exactly the 2-rank run's halves.
    single, halves = order(one), (order(two, 0), order(two, 1))
    assert sorted(single) == list(range(1, STEPS + 1))
    for step, ids in single.items():
        assert sorted(halves[0][step] + halves[1][step]) == sorted(ids), step
    after = order(resumed)
    assert sorted(after) == list(range(SAVED_AT + 1, STEPS + 1))
    assert all(after[step] == single[step] for step in after)
    assert order(preempted) == {step: single[step] for step in range(1, SAVED_AT + 1)}
    for rank in range(2):
        after = order(grown, rank)
        assert sorted(after) == list(range(SAVED_AT + 1, STEPS + 1))
        assert all(after[step] == halves[rank][step] for step in after), rank

    # Weights: every draw of a step (ITM negatives, drop path, text dropout) is keyed by sample id,
    # so the runs agree up to floating-point reduction order (each rank sums its half of the batch).
    grown_final = tmp_path / "grown-final.pt"
    boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"]).download_file(
        s3_bucket, f"elastic/checkpoints/{FINAL}", str(grown_final))
    final = {name: weights(path) for name, path in (
        ("one", one / "latest-rank0.pt"), ("two", two / "latest-rank0.pt"),
        ("resumed", resumed / "latest-rank0.pt"), ("grown", grown_final))}
    differences = {name: max_abs_difference(final["one"], final[name]) for name in ("two", "resumed", "grown")}
    print("max abs weight difference from the 1-rank run:", differences)
    assert all(d <= WEIGHT_TOLERANCE for d in differences.values()), differences

    # The dry run says where it would resume and at which world size, reading the record cheaply.
    summary = train_summary(load_config(str(QUICKSTART), resume_args), str(QUICKSTART))
    assert f"resume: from {saved} at batch {SAVED_AT}, resumed at 1 rank from a run saved at 2" in summary

    # A resume that changes the global batch fails in one line naming the key and both values, exit 2.
    capsys.readouterr()
    assert main([str(QUICKSTART), *resume_args, "global_train_batch_size=16", "--dry-run"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == ("config error: cannot resume: global_train_batch_size is 16 but the checkpoint was saved "
                    "with 8; it must not change between restarts"), line


def _shape(**changes) -> dict:
    cfg = load_config(str(QUICKSTART), ["variables.data=unused", *[f"{k}={v}" for k, v in changes.items()]])
    return run_shape(cfg, world_size=2, num_nodes=1)


def test_what_must_not_change_fails_naming_the_key_and_both_values():
    saved = _shape()
    assert saved["train_loader.dataset.num_canonical_nodes"] == 1  # the quick-start fixes it
    assert check_resume(saved, dict(saved)) is None
    assert check_resume(saved, {**saved, "world_size": 1}) == "resumed at 1 rank from a run saved at 2: sample order kept"
    assert check_resume({**saved, "world_size": 1}, saved) == "resumed at 2 ranks from a run saved at 1: sample order kept"
    assert check_resume(saved, {**saved, "num_nodes": 4, "world_size": 32}) is not None  # more nodes: allowed
    for key, value in [("seed", 3), ("train_loader.dataset.shuffle_seed", 5), ("train_loader.dataset.seed", 6)]:
        with pytest.raises(ConfigError, match=f"^cannot resume: {key} is {value} but the checkpoint was saved with"):
            check_resume(saved, _shape(**{key: value}))
    # Unset, Streaming's canonical node count follows the node count: 2 nodes -> 1 node changes the order.
    unset = load_config(str(QUICKSTART), ["variables.data=unused", "train_loader.dataset.num_canonical_nodes=null"])
    with pytest.raises(ConfigError, match="num_canonical_nodes is 1 but the checkpoint was saved with 2; .*set"):
        check_resume(run_shape(unset, 16, 2), run_shape(unset, 8, 1))


def test_rng_states_fit_the_new_world_size():
    states = [{"torch": torch.manual_seed(r).get_state(), "python": None, "numpy": None} for r in range(2)]
    assert fit_rng_states(states, 1, seed=17, batch=8) == states[:1]  # rank 0 keeps entry 0
    grown = fit_rng_states(states[:1], 2, seed=17, batch=8)
    assert grown[0] is states[0] and set(grown[1]) == {"torch", "python", "numpy"}
    again = fit_rng_states(states[:1], 2, seed=17, batch=8)  # the missing entry is seed-derived: reproducible
    assert torch.equal(grown[1]["torch"], again[1]["torch"])
    assert not torch.equal(grown[1]["torch"], fit_rng_states(states[:1], 2, seed=17, batch=9)[1]["torch"])
