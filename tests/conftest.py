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
