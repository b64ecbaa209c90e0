"""Fixtures for the data_prep tests: reading MDS back with Streaming (the S3 server is in tests/conftest.py)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
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


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One local[2] Spark session for the whole test session (starting one takes 10-20 s).

    ``--engine spark`` conversions join it instead of starting their own.
    Spark's scratch files go under pytest's temp folder; its log says errors only.
    Without a Java runtime (not installable from PyPI) the Spark tests are skipped, saying why.
    """
    import os

    from data_prep.common import ConversionError
    from data_prep.spark_engine import require_spark, start_session

    try:
        require_spark()
    except ConversionError as e:
        pytest.skip(str(e))

    scratch = tmp_path_factory.mktemp("spark")
    keys = ("PYSPARK_PYTHON", "PYTHONPATH", "SPARK_LOCAL_IP")
    saved = {k: os.environ.get(k) for k in keys}
    session = start_session("local[2]", log_level="ERROR", conf={
        "spark.local.dir": str(scratch),
        "spark.driver.extraJavaOptions": f"-Djava.io.tmpdir={scratch}",
        "spark.ui.enabled": "false",
    })
    for key, value in saved.items():  # the JVM has them; later subprocesses of the suite need not
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    yield session
    session.stop()
