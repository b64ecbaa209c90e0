"""Initialise VLMo's vision side from BEiT weights (stage 1 as in the paper).

Accepts timm's ``beit_*`` state dicts and the official BEiT ``.pth`` layout (under
``model``), with per-layer relative tables (fine-tuned BEiT) or one shared table
(``rel_pos_bias.*``, BEiT pre-training). Attention, ``norm1``, layer scales, patch
embedding, ``cls_token`` and the V-FFN (``mlp``/``norm2`` -> ``mlp_imag``/``norm2_imag``)
are loaded; the per-layer tables fill the image rows of the shared table.
"""

from __future__ import annotations

import re

import torch

from vlmo_composer.checkpoints.io import LoadReport, StateDictSource, read_state_dict
from vlmo_composer.model.relative_position import resize_relative_table
from vlmo_composer.model.vlmo import VLMo

# BEiT block parameter -> VLMo block parameter.
BLOCK_KEYS = {
    "gamma_1": "gamma_1",
    "gamma_2": "gamma_2",
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "attn.q_bias": "attn.q_bias",
    "attn.v_bias": "attn.v_bias",
    "attn.qkv.weight": "attn.qkv.weight",
    "attn.proj.weight": "attn.proj.weight",
    "attn.proj.bias": "attn.proj.bias",
    "norm2.weight": "norm2_imag.weight",
    "norm2.bias": "norm2_imag.bias",
    "mlp.fc1.weight": "mlp_imag.fc1.weight",
    "mlp.fc1.bias": "mlp_imag.fc1.bias",
    "mlp.fc2.weight": "mlp_imag.fc2.weight",
    "mlp.fc2.bias": "mlp_imag.fc2.bias",
}
GLOBAL_KEYS = {
    "cls_token": "transformer.cls_token",
    "patch_embed.proj.weight": "transformer.patch_embed.proj.weight",
    "patch_embed.proj.bias": "transformer.patch_embed.proj.bias",
}
# BEiT parts without a VLMo counterpart: heads, pooling norms, MIM token, derived buffers.
IGNORED = re.compile(
    r"^(head\.|lm_head\.|fc_norm\.|norm\.|mask_token$|pos_embed$|.*relative_position_index$|.*\.k_bias$)"
)
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


def load_beit(
    path_or_state_dict: StateDictSource, model: VLMo, zero_image_type_embedding: bool = True
) -> LoadReport:
    """Copy BEiT weights into ``model`` in place and report what was not used.

    ``zero_image_type_embedding``: BEiT has no modality embedding; zeroing VLMo's
    image row makes the image path compute exactly BEiT's function at the start.
    Raises ``KeyError`` naming any expected BEiT key that is missing, and
    ``ValueError`` on depth, width or head-count mismatches.
    """
    beit = read_state_dict(path_or_state_dict)
    config = model.config
    layers = config.num_layers
    target = model.state_dict()
    updates: dict[str, torch.Tensor] = {}
    report = LoadReport()
    tables: dict[int, torch.Tensor] = {}
    unused = []

    for key, value in beit.items():
        block = _BLOCK.match(key)
        if key in GLOBAL_KEYS:
            updates[GLOBAL_KEYS[key]] = value
        elif block and block.group(2) in BLOCK_KEYS:
            index = int(block.group(1))
            if index >= layers:
                raise ValueError(f"BEiT has block {index} but the model has {layers} layers")
            updates[f"transformer.blocks.{index}.{BLOCK_KEYS[block.group(2)]}"] = value
        elif block and block.group(2) == "attn.relative_position_bias_table":
            tables[int(block.group(1))] = value
        elif key == "rel_pos_bias.relative_position_bias_table":
            tables = {i: value for i in range(layers)}  # one table shared by every layer
        elif IGNORED.match(key):
            unused.append(key)
        else:
            raise KeyError(f"BEiT key '{key}' has no counterpart in VLMo")

    expected = list(GLOBAL_KEYS.values()) + [
        f"transformer.blocks.{i}.{v}" for i in range(layers) for v in BLOCK_KEYS.values()
        if not (v.startswith("gamma") and config.layer_scale_init is None)
        and not (v.endswith(("q_bias", "v_bias")) and not config.qkv_bias)
    ]
    missing = [k for k in expected if k not in updates]
    if missing:
        raise KeyError(f"BEiT checkpoint lacks {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    bad = [f"{k}: BEiT {tuple(v.shape)} vs model {tuple(target[k].shape)}" for k, v in updates.items()
           if v.shape != target[k].shape]
    if bad:
        raise ValueError(f"BEiT shapes do not fit the model: {bad}")

    if model.relative_position_bias_table is not None:
        if len(tables) != layers:
            raise KeyError(f"BEiT checkpoint has relative tables for {len(tables)} of {layers} layers")
        updates["relative_position_bias_table"] = _merge_tables(model, tables, report)
    for name, value in updates.items():
        target[name].copy_(value)
    if zero_image_type_embedding:
        with torch.no_grad():
            model.token_type_embeddings.weight[1:].zero_()
        report.adapted.append("token_type_embeddings rows >= 1 (image) zeroed")
    report.allowed_unexpected = unused
    report.adapted.append(f"{len(updates)} tensors loaded from BEiT")
    return report


def _merge_tables(model: VLMo, tables: dict[int, torch.Tensor], report: LoadReport) -> torch.Tensor:
    """Concatenate per-layer ``[rows, H]`` tables (layer-major) into the shared table's image rows."""
    heads, window = model.config.num_heads, model.config.window_size
    merged = torch.cat([tables[i] for i in range(model.config.num_layers)], dim=1)
    if merged.shape[1] != heads * model.config.num_layers:
        raise ValueError(f"BEiT relative tables have {merged.shape[1] // model.config.num_layers} heads, model {heads}")
    grid_rows = merged.shape[0] - 3
    src_window = (round(grid_rows**0.5) + 1) // 2
    if (2 * src_window - 1) ** 2 != grid_rows:
        raise ValueError(f"BEiT relative table of {merged.shape[0]} rows is not a (2w-1)^2 + 3 layout")
    if src_window != window:
        merged = resize_relative_table(merged, src_window, window)
        report.adapted.append(f"BEiT relative tables resized from window {src_window} to {window}")
    table = model.relative_position_bias_table.detach().clone()
    table[: merged.shape[0]] = merged
    return table
