"""Resumption from S3: a run killed with SIGKILL after a checkpoint and started again with
the same command (autoresume) ends with the weights and the data order of an
uninterrupted run with the same seed.

Everything is real: ``python train.py`` processes, Composer's uploaders (threads, see object_store.py),
a moto S3 server, SIGKILL to the whole process group. The training data stays
local; only checkpoints go to ``s3://``, after steps 4 and 8. 48 images at batch 8
are 6 steps per epoch, so the killed run resumes mid-epoch (step 4) and then
crosses into the second epoch.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import boto3
import pytest
import torch

HERE = Path(__file__).resolve().parent
TRAIN_PY = HERE.parents[1] / "train.py"
CONFIG = HERE / "resume_s3.yaml"
MAX_BATCH = 8  # max_duration in the YAML
FINAL_CHECKPOINT = f"ep1-ba{MAX_BATCH}-rank0.pt"
STEPS_PER_EPOCH = 6
RESUME_POINT = 4  # the checkpoint autoresume must find (save_interval in the YAML)
PROCESS_TIMEOUT = 600.0
CHECKPOINT_BATCH = re.compile(r"-ba(\d+)-rank0\.pt$")
SHARED_MEMORY = Path("/dev/shm")


class Runs:
    """``python train.py resume_s3.yaml run_name=<name> ...`` processes, each in its own
    process group, with their outputs, sample-order logs and S3 checkpoints.

    The working directory is ``workdir``: on autoresume Composer downloads the
    checkpoint to ``./s3:/<bucket>/<run>/checkpoints/`` relative to it.
    """

    def __init__(self, workdir: Path, data: Path, bucket: str) -> None:
        self.workdir, self.data, self.bucket = workdir, data, bucket
        self.processes: list[subprocess.Popen] = []

    @functools.cached_property
    def s3(self):
        return boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"])

    def start(self, name: str, *overrides: str, launcher: tuple[str, ...] = (sys.executable,),
              config: Path = CONFIG, env: Optional[dict[str, str]] = None) -> subprocess.Popen:
        command = [
            *launcher, str(TRAIN_PY), str(config), f"run_name={name}", f"variables.data={self.data}",
            f"variables.bucket={self.bucket}", f"variables.here={HERE}",
            f"variables.sample_log={self.workdir / f'{name}-order.jsonl'}", *overrides,
        ]
        with open(self.workdir / f"{name}.out", "ab") as out:
            out.write(f"$ {' '.join(command)}\n".encode())
            out.flush()
            process = subprocess.Popen(command, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True, env={**os.environ, **(env or {})})
        self.processes.append(process)
        return process

    def output(self, name: str, chars: int = 4000) -> str:
        """What the latest process of run ``name`` printed (its end)."""
        text = (self.workdir / f"{name}.out").read_text(errors="replace")
        return text[text.rfind("\n$ ") + 1:][-chars:]

    def wait_for_success(self, process: subprocess.Popen, name: str) -> None:
        process.wait(timeout=PROCESS_TIMEOUT)
        assert process.returncode == 0, f"run {name} failed ({process.returncode}):\n{self.output(name)}"

    def wait_until(self, process: subprocess.Popen, name: str, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while not done():
            if process.poll() is not None:
                pytest.fail(f"run {name} ended ({process.returncode}) before {what}:\n{self.output(name)}")
            if time.monotonic() > deadline:
                pytest.fail(f"run {name}: no {what} in {PROCESS_TIMEOUT:.0f}s")
            time.sleep(0.2)

    def wait_for_latest_checkpoint(self, process: subprocess.Popen, name: str, at_least: int) -> None:
        self.wait_until(process, name, lambda: checkpoint_batch(self.latest_checkpoint(name)) >= at_least,
                        f"its latest checkpoint reached batch {at_least}")

    def wait_for_steps(self, process: subprocess.Popen, name: str, steps: int) -> None:
        """Until run ``name`` logged ``steps`` steps in all: its dataset exists by then.

        Two processes that create Streaming datasets at the same moment can pick the same
        shared-memory prefix (FileExistsError: '/000NNN_locals'), so runs start one by one.
        """
        log = self.workdir / f"{name}-order.jsonl"
        self.wait_until(process, name, lambda: log.exists() and log.read_text().count("\n") >= steps,
                        f"step {steps}")

    @staticmethod
    def kill(process: subprocess.Popen, timeout: float = 30.0) -> None:
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

    def kill_all(self) -> None:
        for process in self.processes:
            self.kill(process)

    def streaming_shared_memory(self) -> set[str]:
        """Prefixes of the Streaming shared memory registered for this test's data."""
        prefixes = set()
        for locals_entry in SHARED_MEMORY.glob("*_locals"):
            try:
                if str(self.data).encode() in locals_entry.read_bytes():
                    prefixes.add(locals_entry.name.split("_")[0])
            except FileNotFoundError:
                continue
        return prefixes

    @staticmethod
    def remove_shared_memory(prefixes: set[str]) -> None:
        """What a killed run's datasets leave in /dev/shm (a normal exit removes it)."""
        for prefix in prefixes:
            for entry in SHARED_MEMORY.glob(f"{prefix}_*"):
                entry.unlink(missing_ok=True)

    def sample_order(self, name: str) -> list[dict]:
        return [json.loads(line) for line in (self.workdir / f"{name}-order.jsonl").read_text().splitlines()]

    def latest_checkpoint(self, name: str) -> Optional[str]:
        """The object ``latest-rank0.pt.symlink`` names (what autoresume loads), if any."""
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=f"{name}/checkpoints/latest-rank0.pt.symlink")["Body"]
        except self.s3.exceptions.NoSuchKey:
            return None
        return body.read().decode()

    def checkpoints(self, name: str) -> set[str]:
        listing = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=f"{name}/checkpoints/")
        return {Path(o["Key"]).name for o in listing.get("Contents", [])}

    def weights(self, name: str, checkpoint: str) -> dict[str, torch.Tensor]:
        local = self.workdir / "downloads" / name / checkpoint
        local.parent.mkdir(parents=True, exist_ok=True)
        self.s3.download_file(self.bucket, f"{name}/checkpoints/{checkpoint}", str(local))
        return model_weights(local)


def checkpoint_batch(key: Optional[str]) -> int:
    match = CHECKPOINT_BATCH.search(key or "")
    return int(match.group(1)) if match else 0


def model_weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state"]["model"]


def max_abs_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((x.double() - b[k].double()).abs().max().item() for k, x in a.items())


@pytest.mark.s3
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_killed_run_resumes_from_s3_like_an_uninterrupted_run(synthetic_data, s3_bucket, tmp_path):
    runs = Runs(tmp_path, synthetic_data, s3_bucket)
    try:
        # A trains without interruption; B, beside it, holds after batch 5 (its batch-4 checkpoint is
        # then the one autoresume would load) until it is killed, however loaded the machine is.
        run_a = runs.start("a")
        runs.wait_for_steps(run_a, "a", 1)
        shared_memory_before = runs.streaming_shared_memory()
        killed = runs.start("b", f"callbacks.resume_test_hooks.hold_after_batch={RESUME_POINT + 1}",
                            f"callbacks.resume_test_hooks.hold_file={tmp_path / 'never-created'}")
        runs.wait_for_latest_checkpoint(killed, "b", at_least=RESUME_POINT)
        runs.kill(killed)
        assert killed.returncode == -signal.SIGKILL
        runs.remove_shared_memory(runs.streaming_shared_memory() - shared_memory_before)

        assert runs.latest_checkpoint("b") == f"b/checkpoints/ep0-ba{RESUME_POINT}-rank0.pt"  # uploaders dead too
        assert FINAL_CHECKPOINT not in runs.checkpoints("b")
        killed_steps = len(runs.sample_order("b"))
        assert RESUME_POINT <= killed_steps < MAX_BATCH

        # The same command again resumes from S3. Beside it, a negative control with other seeds
        # (checkpoints saved locally, to spare S3 uploads).
        resumed = runs.start("b")
        runs.wait_for_steps(resumed, "b", killed_steps + 1)
        control = runs.start("c", "seed=8", "train_loader.dataset.shuffle_seed=12", f"save_folder={tmp_path / 'c'}",
                             f"save_interval={MAX_BATCH}ba", "autoresume=false")
        runs.wait_for_steps(control, "c", 1)
        runs.wait_for_success(resumed, "b")
        # Once more after completion (a scheduler's retry): autoresume finds the final checkpoint in S3,
        # trains nothing and exits cleanly.
        rerun = runs.start("b")
        for process, name in ((run_a, "a"), (control, "c"), (rerun, "b")):
            runs.wait_for_success(process, name)
    finally:
        runs.kill_all()

    # Data order: A saw every image once in the first epoch; B saw exactly A's batches before the
    # kill and after the resume, which started right after the checkpoint it loaded.
    order_a = runs.sample_order("a")
    assert [e["batch"] for e in order_a] == list(range(1, MAX_BATCH + 1))
    first_epoch = sorted(i for e in order_a[:STEPS_PER_EPOCH] for i in e["sample_index"])
    assert first_epoch == list(range(STEPS_PER_EPOCH * 8))
    order_b = runs.sample_order("b")
    before_kill, after_resume = order_b[:killed_steps], order_b[killed_steps:]
    assert before_kill == order_a[:killed_steps]
    assert [e["batch"] for e in after_resume] == list(range(RESUME_POINT + 1, MAX_BATCH + 1)), (
        f"after the kill B trained batches {[e['batch'] for e in after_resume]}: the resumed run must go on "
        f"from its S3 checkpoint (batch {RESUME_POINT}), the restart after completion must train nothing"
    )
    assert after_resume == order_a[RESUME_POINT:]

    # Weights: both S3 runs end at the same final checkpoint, equal within 1e-6.
    assert runs.latest_checkpoint("a") == f"a/checkpoints/{FINAL_CHECKPOINT}"
    assert runs.latest_checkpoint("b") == f"b/checkpoints/{FINAL_CHECKPOINT}"
    weights_a = runs.weights("a", FINAL_CHECKPOINT)
    difference = max_abs_difference(weights_a, runs.weights("b", FINAL_CHECKPOINT))
    assert difference <= 1e-6, f"resumed from batch {RESUME_POINT}: weights differ by up to {difference:.3g}"

    # The comparisons can fail: other seeds give other weights and another order.
    assert max_abs_difference(weights_a, model_weights(tmp_path / "c" / FINAL_CHECKPOINT)) > 1e-3
    assert runs.sample_order("c")[0] != order_a[0]


@pytest.mark.timeout(600)
def test_ctrl_c_saves_the_batch_in_progress_and_says_how_to_resume(synthetic_data, tmp_path):
    """Ctrl-C in a terminal: SIGINT to the whole process group (the run and its dataloader worker)
    while the run is in batch 2; it saves that batch locally, prints one line and exits 130."""
    runs = Runs(tmp_path, synthetic_data, bucket="unused")  # checkpoints in a local folder
    release = tmp_path / "release"
    try:
        process = runs.start("i", f"save_folder={tmp_path / 'ckpt'}", "max_duration=3ba", "train_loader.num_workers=1",
                             "callbacks.resume_test_hooks.hold_after_batch=2",
                             f"callbacks.resume_test_hooks.hold_file={release}")
        runs.wait_for_steps(process, "i", 2)
        os.killpg(process.pid, signal.SIGINT)
        release.touch()
        process.wait(timeout=120)
    finally:
        runs.kill_all()
    out = runs.output("i")
    assert process.returncode == 130, out
    assert "Traceback" not in out, out
    (line,) = [line for line in out.splitlines() if "SIGINT" in line]
    checkpoint = tmp_path / "ckpt" / "ep0-ba2-rank0.pt"
    assert line.startswith(f"run i: interrupted (SIGINT) at batch 2: checkpoint {checkpoint}"), line
    assert line.endswith("run the same command to resume"), line  # the YAML has autoresume: true
    assert (tmp_path / "ckpt" / "latest-rank0.pt").resolve() == checkpoint.resolve()
    assert len(runs.sample_order("i")) == 2
