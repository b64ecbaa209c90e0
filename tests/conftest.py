"""Shared fixtures: the official reference file and small helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from quickstart_run import QuickstartRun, run_quickstart
from s3_server import moto_s3
from stores.store_servers import azurite, azurite_missing, gcs_emulator
from streaming_memory import open_descriptors, release_orphaned_streaming_memory

FIXTURES = Path(__file__).parent / "fixtures"
# Past this many open descriptors, Streaming memory no test holds is given back.
DESCRIPTOR_SWEEP_AT = 1000


@pytest.fixture(autouse=True)
def release_streaming_memory() -> Iterator[None]:
    """Keep the suite's open descriptors bounded (see tests/streaming_memory.py)."""
    yield
    if open_descriptors() > DESCRIPTOR_SWEEP_AT:
        release_orphaned_streaming_memory()


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


@pytest.fixture(scope="session")
def quickstart(tmp_path_factory) -> QuickstartRun:
    """``make quickstart`` as printed (synthetic data, training, eval, curves), once per session."""
    return run_quickstart(tmp_path_factory.mktemp("quickstart"))


@pytest.fixture
def s3_bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto S3 server with one bucket for one test (see :func:`moto_s3`)."""
    with moto_s3(monkeypatch.setenv) as bucket:
        yield bucket


def with_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], name: str) -> str:
    """``name`` on a session's server whose variables ``env`` reach every process the test starts."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return name


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory) -> Iterator[dict[str, str]]:
    """One Azurite per session (tests/stores and the img2dataset-on-Spark test); skipped without node."""
    why = azurite_missing()
    if why:
        pytest.skip(why)
    with azurite(tmp_path_factory.mktemp("azurite")) as env:
        yield env


@pytest.fixture
def azure_container(azurite_server, monkeypatch: pytest.MonkeyPatch) -> str:
    """``test-container`` on the session's Azurite; its variables reach every process the test starts."""
    return with_env(monkeypatch, azurite_server, "test-container")


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory) -> Iterator[dict[str, str]]:
    """One GCS emulator per session (tests/stores and store inputs of data_prep)."""
    with gcs_emulator(tmp_path_factory.mktemp("gcs")) as env:
        yield env


@pytest.fixture
def gcs_bucket(gcs_server, monkeypatch: pytest.MonkeyPatch) -> str:
    """``test-bucket`` on the session's emulator; its variables reach every process the test starts."""
    return with_env(monkeypatch, gcs_server, "test-bucket")
