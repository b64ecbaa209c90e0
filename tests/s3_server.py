"""A real S3-compatible server for tests (moto server mode) on 127.0.0.1."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

from distributed import free_port


@contextlib.contextmanager
def moto_s3(setenv: Callable[[str, str], None], secret_key: str = "testing") -> Iterator[str]:
    """A real S3-compatible server (moto server mode) on 127.0.0.1 with one bucket.

    ``setenv`` exports the credentials and endpoint, so they reach every process the
    test starts (converter workers, training processes, Composer's spawned uploaders),
    as they would on a user's machine. Yields the bucket name.
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
        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": secret_key,
                           "AWS_DEFAULT_REGION": "us-east-1", "S3_ENDPOINT_URL": endpoint}.items():
            setenv(key, value)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="test-bucket")
        yield "test-bucket"
    finally:
        server.stop()
        requests_log.setLevel(level)
