"""Shared fixtures: the official reference file and small helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def official_tiny() -> dict:
    """The official VLMo code's tiny reference (state dict, inputs, outputs, grads)."""
    return torch.load(FIXTURES / "official_vlmo_tiny.pt", weights_only=False)


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """A small synthetic dataset for every schema, made once per test session."""
    from data_prep.make_synthetic import main as make_synthetic

    out = tmp_path_factory.mktemp("synthetic")
    make_synthetic(["--out", str(out), "--train", "48", "--val", "16", "--test", "16",
                    "--image-size", "64", "--no-progress"])
    return out
