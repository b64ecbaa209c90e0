"""Masked image modeling: regress per-patch normalised pixels of masked patches."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def patchify(pixel_values: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``[B, C, H, W] -> [B, P, patch*patch*C]`` in row-major patch order (the token order)."""
    batch, chans, height, width = pixel_values.shape
    rows, cols = height // patch_size, width // patch_size
    x = pixel_values.reshape(batch, chans, rows, patch_size, cols, patch_size)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(batch, rows * cols, patch_size * patch_size * chans)


def normalized_patch_targets(pixel_values: torch.Tensor, patch_size: int, eps: float = 1e-6) -> torch.Tensor:
    """Each patch's pixels normalised by its own mean and variance (MAE's target)."""
    patches = patchify(pixel_values.float(), patch_size)
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


def mim_loss(predictions: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over masked patches only (``mask`` is ``[B, P]`` bool)."""
    return F.mse_loss(predictions[mask].float(), targets[mask])
