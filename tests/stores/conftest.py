"""One GCS emulator per pytest session; each test gets its variables (Azurite: tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from store_servers import gcs_emulator


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory) -> Iterator[dict[str, str]]:
    with gcs_emulator(tmp_path_factory.mktemp("gcs")) as env:
        yield env


def _use(server_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's variables for this test; they reach every process the test starts."""
    for key, value in server_env.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def gcs_bucket(gcs_server, monkeypatch: pytest.MonkeyPatch) -> str:
    """``test-bucket`` on the session's emulator."""
    _use(gcs_server, monkeypatch)
    return "test-bucket"
