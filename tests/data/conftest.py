"""Fixtures for the data tests."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Callable

import pytest


@pytest.fixture
def local_dir(tmp_path: Path) -> Callable[[], str]:
    """A fresh local cache directory per call: Streaming needs one per dataset and per stream."""
    counter = itertools.count()
    return lambda: str(tmp_path / f"local{next(counter)}")
