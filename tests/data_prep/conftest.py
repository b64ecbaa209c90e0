"""Fixtures for the data_prep tests: reading MDS back with Streaming, a local S3 server."""

from __future__ import annotations

import itertools
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def read_mds(tmp_path: Path) -> Callable[[str], list[dict[str, Any]]]:
    """Read every sample of a dataset (local folder or s3://) in index order with Streaming.

    Each read gets its own local cache directory (Streaming refuses to reuse
    one) and checks every shard's xxh64 hash.
    """
    from streaming import StreamingDataset

    counter = itertools.count()

    def read(remote: str) -> list[dict[str, Any]]:
        local = tmp_path / f"mds_cache_{next(counter)}"
        dataset = StreamingDataset(remote=str(remote), local=str(local), shuffle=False, batch_size=1,
                                   validate_hash="xxh64")
        return [dataset[i] for i in range(dataset.num_samples)]

    return read


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real S3-compatible server (moto server mode) on 127.0.0.1 with one bucket.

    The environment variables reach every process the test starts, as they
    would on a user's machine.
    """
    import boto3
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "S3_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="mds-test")
    try:
        yield "mds-test"
    finally:
        server.stop()
