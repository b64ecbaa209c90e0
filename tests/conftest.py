"""Shared fixtures: the official reference file and small helpers."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from distributed import free_port

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def official_tiny() -> dict:
    """The official VLMo code's tiny reference (state dict, inputs, outputs, grads)."""
    return torch.load(FIXTURES / "official_vlmo_tiny.pt", weights_only=False)


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """A small synthetic dataset for every schema, made once per test session.

    It is ``<root>/mds`` and also holds every name the shipped YAMLs read
    (``--recipe-names``), so ``variables.root=<root>`` runs any recipe on it.
    """
    from data_prep.make_synthetic import main as make_synthetic

    out = tmp_path_factory.mktemp("recipes") / "mds"
    make_synthetic(["--out", str(out), "--train", "48", "--val", "16", "--test", "16",
                    "--image-size", "64", "--recipe-names", "--no-progress"])
    return out


@pytest.fixture
def s3_bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real S3-compatible server (moto server mode) on 127.0.0.1 with one bucket.

    The environment variables reach every process the test starts (converter
    workers, training processes, Composer's spawned uploaders), as they would on a
    user's machine.
    """
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    requests_log = logging.getLogger("werkzeug")  # one line per request: hundreds per checkpoint
    level = requests_log.level
    requests_log.setLevel(logging.WARNING)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": "us-east-1", "S3_ENDPOINT_URL": endpoint}.items():
            monkeypatch.setenv(key, value)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="test-bucket")
        yield "test-bucket"
    finally:
        server.stop()
        requests_log.setLevel(level)
