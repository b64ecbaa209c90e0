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
