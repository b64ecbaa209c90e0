"""Resumption from S3: a run killed with SIGKILL after a checkpoint and started again with
the same command (autoresume) ends with the weights and the data order of an
uninterrupted run with the same seed.

Everything is real: ``python train.py`` processes, Composer's spawned uploaders,
a moto S3 server, SIGKILL to the whole process group. The training data stays
local; only checkpoints go to ``s3://``. 48 images at batch 8 are 6 steps per
epoch, so the 8-step runs resume mid-epoch and then cross into the second epoch.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import boto3
import pytest
import torch

HERE = Path(__file__).resolve().parent
TRAIN_PY = HERE.parents[1] / "train.py"
CONFIG = HERE / "resume_s3.yaml"
MAX_BATCH = 8  # max_duration in the YAML
KILL_AFTER = 4  # kill once autoresume would start from this batch or later
STEPS_PER_EPOCH = 6
PROCESS_TIMEOUT = 600.0
CHECKPOINT_NAME = re.compile(r"ep\d+-ba(\d+)-rank0\.pt$")


def start_run(run_name: str, data: Path, bucket: str, workdir: Path, *overrides: str) -> subprocess.Popen:
    """``python train.py resume_s3.yaml run_name=...`` in its own process group.

    The working directory is ``workdir``: on autoresume Composer downloads the
    checkpoint to ``./s3:/<bucket>/<run>/checkpoints/`` relative to it.
    """
    command = [
        sys.executable, str(TRAIN_PY), str(CONFIG), f"run_name={run_name}",
        f"variables.data={data}", f"variables.bucket={bucket}", f"variables.here={HERE}",
        f"variables.sample_log={workdir / f'{run_name}-order.jsonl'}", *overrides,
    ]
    with open(workdir / f"{run_name}.out", "ab") as out:
        out.write(f"$ {' '.join(command)}\n".encode())
        out.flush()
        return subprocess.Popen(command, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def output_tail(workdir: Path, run_name: str, chars: int = 4000) -> str:
    return (workdir / f"{run_name}.out").read_text(errors="replace")[-chars:]


def wait_for_success(process: subprocess.Popen, run_name: str, workdir: Path) -> None:
    process.wait(timeout=PROCESS_TIMEOUT)
    assert process.returncode == 0, f"run {run_name} failed ({process.returncode}):\n{output_tail(workdir, run_name)}"


def kill_group(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGKILL the training process and its spawned helpers; return once all are gone."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    process.wait(timeout=timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes of group {process.pid} survived SIGKILL")


def latest_checkpoint(s3, bucket: str, run_name: str) -> Optional[str]:
    """The object Composer's ``latest-rank0.pt.symlink`` names (what autoresume loads), if any."""
    try:
        body = s3.get_object(Bucket=bucket, Key=f"{run_name}/checkpoints/latest-rank0.pt.symlink")["Body"]
    except s3.exceptions.NoSuchKey:
        return None
    return body.read().decode()


def checkpoint_batch(key: Optional[str]) -> int:
    match = CHECKPOINT_NAME.search(key or "")
    return int(match.group(1)) if match else 0


def wait_for_latest_checkpoint(s3, bucket: str, run_name: str, at_least: int, process: subprocess.Popen,
                               workdir: Path) -> None:
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while checkpoint_batch(latest_checkpoint(s3, bucket, run_name)) < at_least:
        if process.poll() is not None:
            pytest.fail(f"run {run_name} ended ({process.returncode}) before its latest checkpoint reached batch "
                        f"{at_least}:\n{output_tail(workdir, run_name)}")
        if time.monotonic() > deadline:
            pytest.fail(f"no checkpoint at batch >= {at_least} for run {run_name} in {PROCESS_TIMEOUT:.0f}s")
        time.sleep(0.2)


def read_sample_order(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def model_weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state"]["model"]


def download_weights(s3, bucket: str, key: str, workdir: Path) -> dict[str, torch.Tensor]:
    local = workdir / "downloads" / key
    local.parent.mkdir(parents=True, exist_ok=True)
    s3.download_file(bucket, key, str(local))
    return model_weights(local)


def max_abs_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((x.double() - b[k].double()).abs().max().item() for k, x in a.items())


@pytest.mark.s3
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_killed_run_resumes_from_s3_like_an_uninterrupted_run(synthetic_data, s3_bucket, tmp_path):
    s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"])
    final = f"ep1-ba{MAX_BATCH}-rank0.pt"
    processes: list[subprocess.Popen] = []

    def start(run_name: str, *overrides: str) -> subprocess.Popen:
        processes.append(start_run(run_name, synthetic_data, s3_bucket, tmp_path, *overrides))
        return processes[-1]

    try:
        # A trains without interruption; B, beside it, sleeps after each step from batch 4 on so that
        # it is still training when autoresume could pick up its batch-4 (or later) checkpoint.
        run_a = start("a")
        killed = start("b", f"callbacks.resume_test_hooks.slow_from_batch={KILL_AFTER}",
                       "callbacks.resume_test_hooks.slow_seconds=5")
        wait_for_latest_checkpoint(s3, s3_bucket, "b", KILL_AFTER, killed, tmp_path)
        kill_group(killed)
        assert killed.returncode == -signal.SIGKILL

        resume_point = checkpoint_batch(latest_checkpoint(s3, s3_bucket, "b"))  # uploads have stopped now
        killed_order = read_sample_order(tmp_path / "b-order.jsonl")
        assert [e["batch"] for e in killed_order] == list(range(1, len(killed_order) + 1))
        assert KILL_AFTER <= resume_point <= len(killed_order) < MAX_BATCH, (resume_point, len(killed_order))

        # The same command again, which resumes from S3; and a negative control with other seeds
        # (checkpoints saved locally, to spare S3 uploads).
        resumed = start("b")
        control = start("c", "seed=8", "train_loader.dataset.shuffle_seed=12", f"save_folder={tmp_path / 'c'}",
                        f"save_interval={MAX_BATCH}ba", "autoresume=false")
        for process, name in ((run_a, "a"), (resumed, "b"), (control, "c")):
            wait_for_success(process, name, tmp_path)
    finally:
        for process in processes:
            kill_group(process)

    # Data order: A saw every image once per epoch; B before the kill and after the resume saw
    # exactly A's batches, and the resumed run started right after the checkpoint it loaded.
    order_a = read_sample_order(tmp_path / "a-order.jsonl")
    assert [e["batch"] for e in order_a] == list(range(1, MAX_BATCH + 1))
    first_epoch = sorted(i for e in order_a[:STEPS_PER_EPOCH] for i in e["sample_index"])
    assert first_epoch == list(range(STEPS_PER_EPOCH * 8))
    order_b = read_sample_order(tmp_path / "b-order.jsonl")
    before_kill, after_resume = order_b[:len(killed_order)], order_b[len(killed_order):]
    assert [e["batch"] for e in after_resume] == list(range(resume_point + 1, MAX_BATCH + 1))
    assert before_kill == order_a[:len(before_kill)]
    assert after_resume == order_a[resume_point:]

    # Weights: both S3 runs end at the same final checkpoint, equal within 1e-6.
    assert latest_checkpoint(s3, s3_bucket, "a") == f"a/checkpoints/{final}"
    assert latest_checkpoint(s3, s3_bucket, "b") == f"b/checkpoints/{final}"
    weights_a = download_weights(s3, s3_bucket, f"a/checkpoints/{final}", tmp_path)
    weights_b = download_weights(s3, s3_bucket, f"b/checkpoints/{final}", tmp_path)
    assert max_abs_difference(weights_a, weights_b) <= 1e-6

    # The comparisons can fail: other seeds give other weights and another order.
    weights_c = model_weights(tmp_path / "c" / final)
    assert max_abs_difference(weights_a, weights_c) > 1e-3
    assert read_sample_order(tmp_path / "c-order.jsonl")[0] != order_a[0]
