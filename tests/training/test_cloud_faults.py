"""Training survives the cloud: a flaky object store, an outage, preemption (SIGTERM), a small disk.

One module-scoped S3 (moto server) holds the training data, re-sharded into
twelve shards of half a batch each so that shard downloads and cache evictions
happen all through a run. Every run reads its shards from ``s3://`` and checkpoints to
``s3://`` through its own fault-injecting proxy (``tests/faults/proxy.py``):

* R, the reference: a proxy that injects nothing;
* F: 10% of requests reset / 503 SlowDown / 500 / stalled past the read timeout,
  a cache limit of four shards (Streaming's minimum) (evictions, downloads again in epoch 2) and a
  metrics file; its weights must equal R's, and no file it or R wrote may
  contain the secret key;
* O: the store fails every request once the batch-4 checkpoint is in; the run
  must stop with an error naming the store; the same command, once the store is
  back (10% faults), must finish equal to R;
* P: sent SIGTERM while it waits after batch 3 (a test hook holds O and P at
  known steps): it must save the current batch to S3 and exit (143)
  within the grace period; the same command must finish equal to R.

Runs start one after another (Streaming's shared-memory race, see
test_resume_s3.py) and then train side by side.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import boto3
import pytest

from s3_server import moto_s3
from distributed import free_port
from faults.proxy import FAULTS, FaultProxy
from training.test_resume_s3 import Runs, checkpoint_batch, max_abs_difference

pytestmark = [pytest.mark.s3, pytest.mark.slow]

SECRET_KEY = f"vlmoSecret{secrets.token_hex(12)}"
MAX_BATCH, SAMPLES_PER_SHARD, CACHE_LIMIT = 8, 4, "28kb"
FINAL = f"ep1-ba{MAX_BATCH}-rank0.pt"
PREEMPT_AFTER = 3
GRACE_SECONDS = 240  # the default is 30 s; a test on a loaded 2-core box needs more for the same work
DATA_PREFIX = "data/image_text/train"
LAUNCHER = (sys.executable, "-m", "composer.cli.launcher", "-n", "1")  # the `composer` command


@dataclass
class Cloud:
    bucket: str
    upstream_port: int
    shards: int
    shards_dir: Path

    @property
    def remote(self) -> str:
        return f"s3://{self.bucket}/{DATA_PREFIX}"


def reshard(source: Path, out: Path, samples_per_shard: int) -> int:
    """The synthetic image-text split rewritten with Streaming's MDSWriter into small shards
    (zstd, xxh64 hashes, as data_prep writes them); returns the number of shards."""
    from streaming import MDSWriter, StreamingDataset

    dataset = StreamingDataset(local=str(source), shuffle=False, batch_size=1)
    shard = dataset.shards[0]
    columns = dict(zip(shard.column_names, shard.column_encodings))
    raw_bytes = sum(s.get_raw_size() for s in dataset.shards)
    with MDSWriter(out=str(out), columns=columns, compression="zstd", hashes=["xxh64"],
                   size_limit=raw_bytes * samples_per_shard // dataset.num_samples) as writer:
        for i in range(dataset.num_samples):
            writer.write(dataset[i])
    return len(list(out.glob("shard.*.mds.zstd")))


@pytest.fixture(scope="module")
def cloud(synthetic_data: Path, tmp_path_factory) -> Iterator[Cloud]:
    shards_dir = tmp_path_factory.mktemp("shards")
    shards = reshard(synthetic_data / "image_text" / "train", shards_dir, SAMPLES_PER_SHARD)
    with pytest.MonkeyPatch.context() as env, moto_s3(env.setenv, secret_key=SECRET_KEY) as bucket:
        client = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"])
        for path in shards_dir.iterdir():
            client.upload_file(str(path), bucket, f"{DATA_PREFIX}/{path.name}")
        yield Cloud(bucket, int(os.environ["S3_ENDPOINT_URL"].rsplit(":", 1)[1]), shards, shards_dir)


def stream_from_s3(cloud: Cloud, cache: Path) -> list[str]:
    """Overrides of resume_s3.yaml: the training shards come from S3 through the run's proxy."""
    return [f"train_loader.dataset.remote={cloud.remote}", f"train_loader.dataset.local={cache}",
            "train_loader.dataset.validate_hash=xxh64", "train_loader.dataset.download_retry=2",
            "train_loader.dataset.download_timeout=3", "object_store.read_timeout=3",
            "object_store.max_attempts=5"]


class CloudRuns(Runs):
    cloud: Cloud

    def start_via(self, proxy: FaultProxy, name: str, *overrides: str, **kwargs) -> subprocess.Popen:
        cache = self.workdir / f"cache-{name}"
        before = self.streaming_shared_memory()
        process = self.start(name, *stream_from_s3(self.cloud, cache), *overrides,
                             env={"S3_ENDPOINT_URL": proxy.url}, **kwargs)
        self.wait_until(process, name, lambda: bool(self.streaming_shared_memory() - before),
                        "its Streaming dataset")
        return process


SIGTERM_PROBE = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: (open(sys.argv[1], "w").write("SIGTERM"), sys.exit(0)))
open(sys.argv[1] + ".pid", "w").write(str(os.getpid()))
time.sleep(300)
"""


def test_composer_launcher_passes_sigterm_to_its_ranks(tmp_path: Path) -> None:
    """A SIGTERM to ``composer`` (what Kubernetes sends the container's main process) reaches
    the rank, where PreemptionCheckpoint handles it; the launcher waits for the rank."""
    probe, got = tmp_path / "probe.py", tmp_path / "got"
    probe.write_text(SIGTERM_PROBE)
    launcher = subprocess.Popen([*LAUNCHER, "--master_port", str(free_port()), str(probe), str(got)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not Path(f"{got}.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=60) == 0
        assert got.read_text() == "SIGTERM"
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)


def files_containing(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.mark.timeout(1500)
def test_training_survives_faults_and_preemption(cloud: Cloud, tmp_path: Path) -> None:
    runs = CloudRuns(tmp_path, tmp_path, cloud.bucket)
    runs.cloud = cloud
    proxies = {name: FaultProxy(cloud.upstream_port, seed=seed, rate=rate, stall_seconds=5).start()
               for name, seed, rate in (("r", 0, 0.0), ("f", 1, 0.1), ("o", 2, 0.0), ("p", 3, 0.0))}
    hold = "callbacks.resume_test_hooks.hold_after_batch={} callbacks.resume_test_hooks.hold_file={}".format
    release = {name: tmp_path / f"release-{name}" for name in ("o", "p")}
    try:
        # Runs behind a fault-free proxy wait longer for a slow moto (a busy box) before retrying a
        # request: a retried CompleteMultipartUpload can race moto's first one (a 500, not a fault).
        patient = "object_store.read_timeout=30"
        reference = runs.start_via(proxies["r"], "r", patient)
        flaky = runs.start_via(proxies["f"], "f", f"train_loader.dataset.cache_limit={CACHE_LIMIT}",
                               f"loggers.file.filename={tmp_path / 'f-metrics.txt'}")
        outage = runs.start_via(proxies["o"], "o", *hold(5, release["o"]).split())
        preempted = runs.start_via(proxies["p"], "p", *hold(PREEMPT_AFTER, release["p"]).split(),
                                   f"preemption_grace_seconds={GRACE_SECONDS}", patient)

        # O: the store goes down once the batch-4 checkpoint is in; the run stops naming the store.
        runs.wait_for_latest_checkpoint(outage, "o", at_least=4)
        proxies["o"].outage()
        release["o"].touch()
        outage.wait(timeout=600)
        assert outage.returncode not in (0, None)
        failure = runs.output("o", 20000)
        assert "object store failure" in failure and f"s3://{cloud.bucket}/o/checkpoints" in failure, failure
        assert proxies["o"].url in failure and cloud.remote in failure
        checkpoint_before_outage = runs.latest_checkpoint("o")

        # P: SIGTERM while it waits after batch 3.
        runs.wait_for_steps(preempted, "p", PREEMPT_AFTER)
        signalled = time.monotonic()
        os.kill(preempted.pid, signal.SIGTERM)
        release["p"].touch()
        preempted.wait(timeout=GRACE_SECONDS + 30)
        exit_seconds = time.monotonic() - signalled
        steps_before_exit = len(runs.sample_order("p"))
        saved = checkpoint_batch(runs.latest_checkpoint("p"))

        # The same commands again, the store back with 10% faults for O.
        proxies["o"].restore(rate=0.1)
        resumed_o = runs.start_via(proxies["o"], "o")
        resumed_p = runs.start_via(proxies["p"], "p", patient)
        for process, name in ((reference, "r"), (flaky, "f"), (resumed_o, "o"), (resumed_p, "p")):
            runs.wait_for_success(process, name)
    finally:
        runs.kill_all()
        for proxy in proxies.values():
            proxy.stop()

    assert preempted.returncode == 143, runs.output("p")
    assert exit_seconds < GRACE_SECONDS, f"SIGTERM to exit took {exit_seconds:.1f}s"
    assert saved == steps_before_exit == PREEMPT_AFTER, "the checkpoint must be the batch it stopped at"
    assert checkpoint_batch(checkpoint_before_outage) == 4

    reference_weights = runs.weights("r", FINAL)
    for name in ("f", "o", "p"):
        assert runs.latest_checkpoint(name) == f"{name}/checkpoints/{FINAL}"
        difference = max_abs_difference(reference_weights, runs.weights(name, FINAL))
        assert difference <= 1e-6, f"run {name}: final weights differ from the fault-free run by {difference:.3g}"
    assert runs.sample_order("f") == runs.sample_order("r")

    # What was injected, and that the small cache evicted and fetched shards again.
    assert proxies["r"].injected() == 0
    flaky_counts = proxies["f"].counts
    assert proxies["f"].injected() >= 5 and len([f for f in FAULTS if flaky_counts[f]]) >= 3, dict(flaky_counts)
    shard_gets = [t for m, t, outcome in proxies["f"].requests if m == "GET" and ".mds.zstd" in t and outcome == "pass"]
    assert len(shard_gets) > cloud.shards, "with a four-shard cache limit, epoch 2 must download shards again"
    print("fault counts:", {name: dict(p.counts) for name, p in proxies.items()})

    # No credentials in anything the runs wrote: local files, outputs, and every object in the bucket.
    needle = SECRET_KEY.encode()
    assert (tmp_path / "f-metrics.txt").exists()
    assert not files_containing(tmp_path, needle)
    listing = runs.s3.list_objects_v2(Bucket=cloud.bucket)["Contents"]
    leaked = [o["Key"] for o in listing
              if needle in runs.s3.get_object(Bucket=cloud.bucket, Key=o["Key"])["Body"].read()]
    assert not leaked


# ---------------------------------------------------------------- corrupt shards (no training run needed)
def flip_byte(data: bytes, at: int = 100) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


def image_text(**streaming: object):
    from vlmo_composer.data.datasets import ImageTextDataset

    return ImageTextDataset(image_size=64, max_text_len=32, randaugment=False, hflip=False, shuffle=False,
                            batch_size=4, validate_hash="xxh64", **streaming)


def sample_indices(dataset) -> list[int]:
    return [int(dataset[i]["sample_index"]) for i in range(dataset.num_samples)]


def test_corrupt_remote_shard_stops_the_run_naming_it(cloud: Cloud, tmp_path: Path) -> None:
    from torch.utils.data import DataLoader

    from vlmo_composer.data.cache_check import CorruptShardError

    s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"])
    for path in cloud.shards_dir.iterdir():
        body = path.read_bytes()
        s3.put_object(Bucket=cloud.bucket, Key=f"corrupt/{path.name}",
                      Body=flip_byte(body) if path.name == "shard.00003.mds.zstd" else body)
    dataset = image_text(remote=f"s3://{cloud.bucket}/corrupt", local=str(tmp_path / "cache"))
    seen = []
    # The download thread or the reading thread may meet the shard first: one error either way.
    with pytest.raises(CorruptShardError) as raised:
        for batch in DataLoader(dataset, batch_size=4, num_workers=0):
            seen += batch["sample_index"].tolist()
    assert all(i < 3 * SAMPLES_PER_SHARD for i in seen), "a sample of the corrupt shard (or after it) was returned"
    reported = str(raised.value)
    assert "Checksum failure" in reported and "shard.00003.mds.zstd" in reported, reported


def test_corrupt_cached_shard_is_fetched_again(cloud: Cloud, tmp_path: Path, caplog) -> None:
    first = image_text(remote=cloud.remote, local=str(tmp_path / "cache"))
    expected = sample_indices(first)  # every shard now in the cache, decompressed
    cached = tmp_path / "cache" / "shard.00002.mds"
    shutil.copytree(tmp_path / "cache", tmp_path / "damaged")
    damaged = tmp_path / "damaged" / "shard.00002.mds"
    damaged.write_bytes(flip_byte(damaged.read_bytes()))
    again = image_text(remote=cloud.remote, local=str(tmp_path / "damaged"))
    assert "corrupt shard" in caplog.text and str(damaged) in caplog.text
    assert sample_indices(again) == expected
    assert damaged.read_bytes() == cached.read_bytes()  # downloaded again, not trained on garbage


def test_corrupt_local_only_shard_is_named(cloud: Cloud, tmp_path: Path) -> None:
    from vlmo_composer.data.cache_check import CorruptShardError

    local = tmp_path / "local"
    shutil.copytree(cloud.shards_dir, local)
    zipped = local / "shard.00001.mds.zstd"
    zipped.write_bytes(flip_byte(zipped.read_bytes()))
    with pytest.raises(CorruptShardError, match="shard.00001.mds.zstd"):
        image_text(local=str(local))
