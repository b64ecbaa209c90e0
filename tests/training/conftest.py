"""Fixtures for the training tests: a local S3 server."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real S3-compatible server (moto server mode) on 127.0.0.1 with one bucket.

    The environment variables reach every process the test starts (training
    processes and Composer's spawned uploaders), as they would on a user's machine.
    """
    import boto3
    from moto.server import ThreadedMotoServer

    port = _free_port()
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
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="checkpoints")
        yield "checkpoints"
    finally:
        server.stop()
        requests_log.setLevel(level)
