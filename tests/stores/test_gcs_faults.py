"""A conversion to ``gs://`` through the fault proxy of tests/faults in front of the GCS emulator: resets,
503s and 500s on every kind of request, retried by the policy of vlmo_composer/stores.py, and the
output is byte-identical to a conversion without faults."""

from __future__ import annotations

import os

import pytest
from faults.compare import assert_same_conversion
from faults.proxy import FaultProxy

from data_prep.make_synthetic import main as make_synthetic
from vlmo_composer import stores

SMALL = ["--train", "6", "--val", "2", "--test", "2", "--image-size", "32", "--no-progress"]


def objects(store: stores.Store, prefix: str) -> dict[str, bytes]:
    return {k[len(prefix):]: store.read_bytes(k) for k in store.list(prefix)}


@pytest.mark.slow
def test_gs_conversion_through_faults_is_byte_identical(gcs_bucket, monkeypatch):
    make_synthetic(["--out", f"gs://{gcs_bucket}/clean", *SMALL])
    emulator = os.environ["STORAGE_EMULATOR_HOST"]
    with FaultProxy(int(emulator.rsplit(":", 1)[1]), seed=5, rate=0.15, faults=("reset", "slowdown", "internal"),
                    max_consecutive=1) as proxy, monkeypatch.context() as env:
        env.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        make_synthetic(["--out", f"gs://{gcs_bucket}/flaky", *SMALL])
        print("gs:// fault counts:", dict(proxy.counts))
    assert proxy.injected() >= 3, dict(proxy.counts)

    store, _ = stores.open_store(f"gs://{gcs_bucket}")
    clean, flaky = objects(store, "clean/"), objects(store, "flaky/")
    assert_same_conversion(clean, flaky)
