"""Fixtures for the inference API tests: a tiny model with every head, some images."""

from __future__ import annotations

import pytest
import torch
from inference_helpers import ANSWERS, random_images, randomised, tiny_config
from PIL import Image

from vlmo_composer import VLMo


@pytest.fixture(scope="module")
def full_model() -> VLMo:
    """Every head at once: ITC, ITM, a 5-answer VQA head and the NLVR2 head.

    A wide initialisation (std 0.3) makes texts and images tell apart: scores then
    differ by more than 1e-3, so rankings do not hinge on rounding.
    """
    torch.manual_seed(0)
    config = tiny_config(init_std=0.3, vqa_num_labels=len(ANSWERS), nlvr2_head=True, num_modality_types=3)
    return randomised(VLMo(config), seed=1)


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    return random_images(6, seed=3)
