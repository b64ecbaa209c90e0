"""Tiny models and inputs shared by the inference API tests."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from vlmo_composer import VLMo, VLMoConfig

ANSWERS = ["yes", "no", "2", "red", "cat"]
# The shape every test model shares (the Composer test trains this through a YAML).
TINY_SHAPE = dict(hidden_size=64, num_layers=2, num_heads=2, ffn_size=128)
TINY_MODEL = dict(size="small", **TINY_SHAPE, vl_ffn_start=1, image_size=32, max_text_len=16, drop_path_rate=0.0)


def tiny_config(**overrides) -> VLMoConfig:
    values = {k: v for k, v in TINY_MODEL.items() if k != "size"}
    return VLMoConfig.named("small", **{**values, **overrides})


def randomised(model: VLMo, seed: int) -> VLMo:
    """A non-zero relative table (it starts at zero), so position handling shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        table = model.relative_position_bias_table
        table.copy_(0.5 * torch.randn(table.shape, generator=g))
    return model.eval()


def random_images(count: int, seed: int) -> list[Image.Image]:
    """RGB images of varied sizes, plus a grayscale one (the API converts it to RGB)."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        h, w = int(rng.integers(20, 60)), int(rng.integers(20, 60))
        images.append(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))
    images[-1] = images[-1].convert("L")
    return images


CAPTIONS = [
    "a red cube on the left",
    "two blue spheres",
    "a green cylinder next to a yellow cone",
    "an empty table",
    "a cat sitting on a mat",
]
