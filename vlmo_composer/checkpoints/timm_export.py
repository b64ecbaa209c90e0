"""Export VLMo's vision tower (the V-FFN path) as a timm BEiT: the inverse of :mod:`.beit`.

VLMo's image-only pass *is* a BEiT: shared attention (``qkv`` without bias plus
``q_bias``/``v_bias``), the V-FFN expert (``norm2_imag``/``mlp_imag``), layer scale,
``cls_token``, patch embedding and the final norm. What differs, and how it is mapped:

* **Relative positions.** VLMo keeps one table ``[rows, heads * layers]`` (columns
  layer-major) whose first ``(2w-1)^2 + 3`` rows are BEiT's image layout, the same
  index scheme as timm's ``gen_relative_position_index`` (2-D offsets, then
  cls->patch, patch->cls, cls->cls). Layer ``i``'s columns of those rows become
  timm's per-layer ``blocks.i.attn.relative_position_bias_table``; the text rows
  are not part of the vision tower.
* **Modality embedding.** VLMo adds ``token_type_embeddings[1]`` (image) to every
  image token. timm has no such term, so it is folded exactly: into ``cls_token``
  and into the patch convolution's bias (a bias adds to every patch alike).
* **Final norm.** timm BEiT's default ``global_pool='avg'`` puts the final norm in
  ``fc_norm`` after pooling, so ``forward_features`` would be un-normed tokens.
  The export asks for ``global_pool='token'``: ``forward_features`` then equals
  ``VLMo.forward_image(x).states`` (all tokens after the final norm) and the pooled
  output (``num_classes=0``) is the normed CLS token, VLMo's ITC feature before
  its projection.

The timm name is the registered ``beit_{base,large}_patch16_<res>`` closest to the
model; the kwargs spell out the whole architecture (size, resolution, positions,
layer scale), so any VLMo size builds. Preprocess as VLMo does (``preprocess``:
mean = std = 0.5, no crop) for equal features.

Command line (sources as ``from_pretrained`` reads them)::

    python -m vlmo_composer.checkpoints.timm_export SOURCE OUT [--kind K] [--size S]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional, Union

import torch

from vlmo_composer.checkpoints.beit import BLOCK_KEYS, GLOBAL_KEYS
from vlmo_composer.model.config import VLMoConfig
from vlmo_composer.model.vlmo import VLMo

TIMM_WEIGHTS_NAME = "timm_model.safetensors"
TIMM_CONFIG_NAME = "timm_config.json"
TIMM_NORM_EPS = 1e-6  # timm's LayerNorm default: a class in the kwargs would not fit a JSON file
IMAGE_TYPE_ID = 1  # the modality row an image-only pass adds (NLVR2's second image, 2, is fusion-only)
# timm's registered BEiT v1 entries: family -> (embed_dim, depth, num_heads), resolutions.
TIMM_FAMILIES = {"base": (768, 12, 12), "large": (1024, 24, 16)}
TIMM_RESOLUTIONS = {"base": (224, 384), "large": (224, 384, 512)}

# VLMo block parameter -> timm block parameter (beit.py's map read backwards).
VLMO_TO_TIMM_BLOCK = {vlmo: timm for timm, vlmo in BLOCK_KEYS.items()}
VLMO_TO_TIMM_GLOBAL = {
    **{vlmo: timm for timm, vlmo in GLOBAL_KEYS.items()},
    "transformer.pos_embed": "pos_embed",
    "transformer.norm.weight": "norm.weight",
    "transformer.norm.bias": "norm.bias",
}


def timm_beit_name(config: VLMoConfig) -> str:
    """The registered timm entry point: the family of the same width/depth/heads (else base)
    at the model's resolution when timm registers it (else 224); kwargs make it exact."""
    shape = (config.hidden_size, config.num_layers, config.num_heads)
    family = next((name for name, dims in TIMM_FAMILIES.items() if dims == shape), "base")
    res = config.image_size if config.image_size in TIMM_RESOLUTIONS[family] else 224
    return f"beit_{family}_patch16_{res}"


def timm_beit_kwargs(config: VLMoConfig) -> dict[str, Any]:
    """``timm.create_model`` kwargs that build VLMo's vision tower exactly (``num_classes`` left to the caller).

    Raises ``ValueError`` for what timm's ``Beit`` cannot express from plain kwargs.
    """
    if config.norm_eps != TIMM_NORM_EPS:
        raise ValueError(
            f"norm_eps={config.norm_eps}: timm's BEiT LayerNorm uses eps={TIMM_NORM_EPS} and its norm_layer "
            "is a class, not a value a JSON config can carry; no timm export for this model"
        )
    mlp_ratio = config.ffn_size / config.hidden_size
    if int(config.hidden_size * mlp_ratio) != config.ffn_size:
        raise ValueError(
            f"ffn_size={config.ffn_size} is not int(hidden_size * mlp_ratio) for any float ratio timm "
            f"would rebuild (hidden_size={config.hidden_size})"
        )
    layer_scale = config.layer_scale_init
    return dict(
        img_size=config.image_size,
        patch_size=config.patch_size,
        in_chans=config.in_chans,
        embed_dim=config.hidden_size,
        depth=config.num_layers,
        num_heads=config.num_heads,
        mlp_ratio=mlp_ratio,
        qkv_bias=config.qkv_bias,
        # timm creates gammas only for a truthy value (the exported gammas replace it), and
        # create_model drops None kwargs (the name's 0.1 would stay): no layer scale is 0.
        init_values=0.0 if layer_scale is None else (layer_scale or 1.0),
        use_abs_pos_emb=config.absolute_position,
        use_rel_pos_bias=config.relative_position,
        use_shared_rel_pos_bias=False,
        global_pool="token",  # final norm inside forward_features, CLS pooling (see the module docstring)
    )


def _copy(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor of its own: safetensors refuses views sharing one storage."""
    return tensor.detach().clone(memory_format=torch.contiguous_format)


def vlmo_to_timm_beit(model: VLMo) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    """``(timm model name, timm kwargs, state dict)`` of the vision tower of ``model``.

    ``timm.create_model(name, pretrained=False, num_classes=0, **kwargs)`` loads the
    state dict strictly. Tensors keep the model's device and dtype (``meta`` included).
    """
    config = model.config
    name, kwargs = timm_beit_name(config), timm_beit_kwargs(config)
    source = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    for vlmo_key, timm_key in VLMO_TO_TIMM_GLOBAL.items():
        if vlmo_key in source:
            state[timm_key] = _copy(source[vlmo_key])
    for i in range(config.num_layers):
        for vlmo_key, timm_key in VLMO_TO_TIMM_BLOCK.items():
            key = f"transformer.blocks.{i}.{vlmo_key}"
            if key in source:
                state[f"blocks.{i}.{timm_key}"] = _copy(source[key])
    state.update(_per_layer_tables(model))
    _fold_image_type(model, state)
    return name, kwargs, state


def _per_layer_tables(model: VLMo) -> dict[str, torch.Tensor]:
    """Each layer's columns of the shared table's image rows, as timm's per-layer tables."""
    table = model.relative_position_bias_table
    if table is None:
        return {}
    heads, rows = model.config.num_heads, model.layout.num_image_rows
    return {
        f"blocks.{i}.attn.relative_position_bias_table": _copy(table[:rows, i * heads : (i + 1) * heads])
        for i in range(model.config.num_layers)
    }


def _fold_image_type(model: VLMo, state: dict[str, torch.Tensor]) -> None:
    """Add VLMo's image modality embedding to ``cls_token`` and the patch bias (timm has none)."""
    image_type = model.token_type_embeddings.weight.detach()[IMAGE_TYPE_ID]
    state["cls_token"] = state["cls_token"] + image_type
    state["patch_embed.proj.bias"] = state["patch_embed.proj.bias"] + image_type


def save_timm_beit(model: VLMo, folder: Union[str, os.PathLike]) -> Path:
    """Write ``timm_model.safetensors`` and ``timm_config.json`` (``model_name`` + ``kwargs``) into ``folder``."""
    from safetensors.torch import save_file

    name, kwargs, state = vlmo_to_timm_beit(model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.cpu().contiguous() for k, v in state.items()}
    save_file(state, str(folder / TIMM_WEIGHTS_NAME), metadata={"format": "pt", "library": "vlmo_composer"})
    config = {"model_name": name, "kwargs": kwargs}
    (folder / TIMM_CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return folder


def load_timm_beit(folder: Union[str, os.PathLike]) -> torch.nn.Module:
    """The timm model a :func:`save_timm_beit` folder describes, loaded strictly (tests and users)."""
    import timm
    from safetensors.torch import load_file

    folder = Path(folder)
    config = json.loads((folder / TIMM_CONFIG_NAME).read_text())
    beit = timm.create_model(config["model_name"], pretrained=False, num_classes=0, **config["kwargs"])
    beit.load_state_dict(load_file(str(folder / TIMM_WEIGHTS_NAME)), strict=True)
    return beit.eval()


def main(argv: Optional[list[str]] = None) -> int:
    """``SOURCE OUT``: load weights as ``from_pretrained`` does, write the timm files into OUT."""
    from vlmo_composer.checkpoints.sources import add_weight_source_options, build_model

    parser = argparse.ArgumentParser(prog="python -m vlmo_composer.checkpoints.timm_export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="exported folder, official file, pretrained name or URL (local or s3://)")
    parser.add_argument("out", help="folder to write timm_model.safetensors and timm_config.json into")
    add_weight_source_options(parser, size_help="named size for a file (base, large, ...); folders carry theirs")
    parser.add_argument("--image-size", type=int, help="export at another resolution (relative table resized)")
    args = parser.parse_args(argv)
    model = build_model(args.source, args.kind, args.size, args.image_size, weights=args.weights_set)
    folder = save_timm_beit(model, args.out)
    name = json.loads((folder / TIMM_CONFIG_NAME).read_text())["model_name"]
    print(f"wrote {folder / TIMM_WEIGHTS_NAME} ({name}) and {folder / TIMM_CONFIG_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
