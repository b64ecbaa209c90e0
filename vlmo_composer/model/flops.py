"""Analytic matmul FLOPs of every pass the model runs (for SpeedMonitor's MFU).

Counts multiply-adds as 2 FLOPs, matmuls only (as MFU conventions do). Text is
counted at its padded length, as the kernels compute it. A training step costs
3x its forward (forward + backward through activations and weights).
"""

from __future__ import annotations

from vlmo_composer.model.config import VLMoConfig


def block_flops(config: VLMoConfig, tokens: int) -> int:
    """One MoME block over ``tokens``: qkv + proj, two FFN matmuls, scores and values."""
    d, f = config.hidden_size, config.ffn_size
    return 8 * tokens * d * d + 4 * tokens * d * f + 4 * tokens * tokens * d


def patch_embed_flops(config: VLMoConfig) -> int:
    return 2 * config.num_patches * config.in_chans * config.patch_size**2 * config.hidden_size


def image_tokens(config: VLMoConfig) -> int:
    return config.num_patches + 1


def unimodal_flops(config: VLMoConfig, tokens: int, with_vl: bool, image: bool) -> int:
    """An image-only or text-only pass, optionally re-running the top blocks (VL branch)."""
    layers = config.num_layers + (config.num_vl_layers if with_vl else 0)
    return layers * block_flops(config, tokens) + (patch_embed_flops(config) if image else 0)


def projection_flops(config: VLMoConfig) -> int:
    return 2 * config.hidden_size**2


def fusion_flops(config: VLMoConfig, text_len: int) -> int:
    """A fused ``[text; image]`` pass plus the pooler."""
    tokens = text_len + image_tokens(config)
    return config.num_layers * block_flops(config, tokens) + patch_embed_flops(config) + projection_flops(config)


def mlm_head_flops(config: VLMoConfig, tokens: int) -> int:
    d = config.hidden_size
    return tokens * (2 * d * d + 2 * d * config.vocab_size)


def vl_pretrain_forward_flops(config: VLMoConfig, text_len: int, masked_tokens: float) -> float:
    """Stage 3 per sample: image + text passes (with VL branch), ITC projections,
    4 fusion passes (1 MLM + 3 ITM), ITM head, MLM head on the masked tokens."""
    itc = 4 * projection_flops(config) if config.itc_vl_head else 2 * projection_flops(config)
    return (
        unimodal_flops(config, image_tokens(config), with_vl=True, image=True)
        + unimodal_flops(config, text_len, with_vl=True, image=False)
        + itc
        + 4 * fusion_flops(config, text_len)
        + 3 * 2 * config.hidden_size * 2
        + mlm_head_flops(config, masked_tokens)
    )


TRAIN_MULTIPLIER = 3
