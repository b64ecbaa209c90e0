"""One GCS emulator and one Azurite per pytest session; each test gets their variables."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from store_servers import azurite, azurite_missing, gcs_emulator


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


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory) -> Iterator[dict[str, str]]:
    why = azurite_missing()
    if why:
        pytest.skip(why)
    with azurite(tmp_path_factory.mktemp("azurite")) as env:
        yield env


@pytest.fixture
def azure_container(azurite_server, monkeypatch: pytest.MonkeyPatch) -> str:
    _use(azurite_server, monkeypatch)
    return "test-container"
