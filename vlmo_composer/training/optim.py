"""Parameter groups: which weights decay, and per-group learning-rate multipliers.

``standard`` (default) exempts from weight decay every bias, norm weight, layer
scale, logit scale, embedding table, the relative-position table and the
CLS/mask tokens, by what the parameter *is*.

``official`` reproduces the official VLMo code, which decides by substring
(``bias``, ``LayerNorm.*``, ``norm.*``, ``norm1.*``, ``norm2.*``): there
``norm2_text/imag/vl`` weights, layer scales, logit scales, embeddings, the
relative table and the CLS token *are* decayed — a quirk of the names, kept
available for exact reproduction.
"""

from __future__ import annotations

import fnmatch
from typing import Iterable, Mapping, Optional

import torch
import torch.nn as nn

NO_DECAY_NAMES = ("relative_position_bias_table", "cls_token", "pos_embed", "mask_token", "logit_scale", "logit_vl_scale")
OFFICIAL_NO_DECAY_SUBSTRINGS = (
    "bias", "LayerNorm.bias", "LayerNorm.weight", "norm.bias", "norm.weight",
    "norm1.bias", "norm1.weight", "norm2.bias", "norm2.weight",
)
RULES = ("standard", "official")


def _embedding_weights(model: nn.Module) -> set[str]:
    return {f"{name}.weight" if name else "weight" for name, m in model.named_modules() if isinstance(m, nn.Embedding)}


def decays(name: str, param, embeddings: set[str], rule: str) -> bool:
    if rule == "official":
        return not any(s in name for s in OFFICIAL_NO_DECAY_SUBSTRINGS)
    if rule != "standard":
        raise ValueError(f"unknown weight-decay rule '{rule}'; choose one of {RULES}")
    leaf = name.rsplit(".", 1)[-1]
    return param.ndim >= 2 and name not in embeddings and leaf not in NO_DECAY_NAMES


def lr_multiplier(name: str, multipliers: Mapping[str, float]) -> float:
    """The multiplier of the first glob matching ``name`` (1.0 if none)."""
    for pattern, mult in multipliers.items():
        if fnmatch.fnmatchcase(name, pattern):
            return float(mult)
    return 1.0


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    lr_multipliers: Mapping[str, float] | None = None,
    rule: str = "standard",
) -> list[dict]:
    """Trainable parameters split by (decay, lr multiplier); frozen ones are left out.

    ``lr_multipliers`` maps parameter-name globs to factors, e.g.
    ``{"*vqa_classifier*": 20}`` for the fine-tuning heads.
    """
    multipliers = dict(lr_multipliers or {})
    embeddings = _embedding_weights(model)
    groups: dict[tuple[bool, float], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = decays(name, param, embeddings, rule)
        mult = lr_multiplier(name, multipliers)
        group = groups.setdefault(
            (decay, mult),
            {"params": [], "names": [], "lr": lr * mult, "weight_decay": weight_decay if decay else 0.0},
        )
        group["params"].append(param)
        group["names"].append(name)
    unused = [p for p in multipliers if not any(fnmatch.fnmatchcase(n, p) for g in groups.values() for n in g["names"])]
    if unused:
        raise ValueError(f"lr_multipliers patterns {unused} match no trainable parameter")
    return [{k: v for k, v in g.items() if k != "names"} for g in groups.values()]


def group_names(model: nn.Module, patterns: Iterable[str]) -> list[str]:
    """Names of parameters matching any glob (for freezing and reporting)."""
    patterns = list(patterns)
    return [n for n, _ in model.named_parameters() if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def use_fused_adamw(fused: Optional[bool] = None) -> bool:
    """Fused AdamW (one kernel for every parameter's update) by default where the
    parameters will train on CUDA; the check runs at the first step, so building the
    optimiser before Composer moves the model to the GPU is fine."""
    return torch.cuda.is_available() if fused is None else fused


def build_adamw(groups: list[dict], lr: float, betas, eps: float, fused: Optional[bool] = None) -> torch.optim.AdamW:
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=use_fused_adamw(fused))
