"""Official VLMo checkpoints (microsoft/unilm ``vlmo/``) in and out.

Parameter names of :class:`~vlmo_composer.VLMo` equal the official keys, so the
conversion is a checked identity plus the adaptations the official loader makes:
derivable buffers dropped, text positions cut to ``max_text_len``, the relative
table's image rows resized to another resolution, and the second-image modality
embedding added for NLVR2.
"""

from __future__ import annotations

import os
from typing import Iterable, Optional, Union

import torch
import torch.nn.functional as F

from vlmo_composer.checkpoints.io import LoadReport, StateDictSource, check_and_load, read_state_dict
from vlmo_composer.model.config import NAMED_CONFIGS, VLMoConfig
from vlmo_composer.model.relative_position import resize_relative_table, window_from_table_rows
from vlmo_composer.model.vlmo import VLMo

DERIVED_BUFFER_SUFFIXES = ("position_ids", "relative_position_index")


def config_from_official(
    state: dict[str, torch.Tensor],
    size_or_config: Union[str, VLMoConfig],
    image_size: Optional[int] = None,
) -> VLMoConfig:
    """The config a checkpoint needs: a named size whose heads follow the file's keys.

    A :class:`VLMoConfig` is taken as given (only ``image_size`` may change), so a
    caller can load into a larger model and allow the extra keys explicitly.
    """
    if isinstance(size_or_config, VLMoConfig):
        return size_or_config if image_size is None else size_or_config.replace(image_size=image_size)
    base = VLMoConfig.named(size_or_config)
    vl_blocks = sorted(
        int(k.split(".")[2]) for k in state if k.startswith("transformer.blocks.") and ".mlp_vl.fc1.weight" in k
    )
    nlvr2 = "nlvr2_classifier.0.weight" in state
    return base.replace(
        image_size=image_size or base.image_size,
        vl_ffn_start=vl_blocks[0] if vl_blocks else base.num_layers,
        itc_head="itc_text_proj.fc.weight" in state,
        itc_vl_head="itc_vl_text_proj.fc.weight" in state,
        itm_head="itm_score.fc.weight" in state,
        mlm_head="mlm_score.decoder.weight" in state,
        vqa_num_labels=state["vqa_classifier.3.weight"].shape[0] if "vqa_classifier.3.weight" in state else 0,
        nlvr2_head=nlvr2,
        num_modality_types=3 if nlvr2 else base.num_modality_types,
    )


def state_dict_size(state: dict[str, torch.Tensor]) -> Optional[tuple[int, int]]:
    """``(hidden_size, num_layers)`` read off the tensor shapes, or None for a non-VLMo dict."""
    blocks = {int(k.split(".")[2]) for k in state if k.startswith("transformer.blocks.") and k.split(".")[2].isdigit()}
    for key in ("text_embeddings.word_embeddings.weight", "transformer.cls_token"):
        if key in state and blocks:
            return int(state[key].shape[-1]), max(blocks) + 1
    return None


def describe_size(hidden_size: int, num_layers: int) -> str:
    """``VLMo-base (hidden 768, 12 layers)``: the named size with these dimensions, if there is one."""
    names = [n for n, c in NAMED_CONFIGS.items() if (c["hidden_size"], c["num_layers"]) == (hidden_size, num_layers)]
    return f"VLMo-{names[0] if names else 'custom'} (hidden {hidden_size}, {num_layers} layers)"


def check_same_size(state: dict[str, torch.Tensor], config: VLMoConfig, source: str) -> None:
    """A checkpoint of another size fails with both sizes named, not with hundreds of shape mismatches."""
    found = state_dict_size(state)
    if found is not None and found != (config.hidden_size, config.num_layers):
        raise ValueError(
            f"{source} holds a {describe_size(*found)} checkpoint but the model is "
            f"{describe_size(config.hidden_size, config.num_layers)}: set task.model.size to the checkpoint's size"
        )


def adapt_official_state_dict(
    state: dict[str, torch.Tensor], config: VLMoConfig, report: LoadReport
) -> dict[str, torch.Tensor]:
    """Apply the official loader's adaptations for ``config`` (a plain dict-to-dict map)."""
    state = {k: v for k, v in state.items() if not k.endswith(DERIVED_BUFFER_SUFFIXES)}

    key = "text_embeddings.position_embeddings.weight"
    if key in state and state[key].shape[0] > config.max_text_len:
        report.adapted.append(f"{key}: first {config.max_text_len} of {state[key].shape[0]} rows kept")
        state[key] = state[key][: config.max_text_len]

    key = "relative_position_bias_table"
    if key in state and config.relative_position:
        src_window = window_from_table_rows(state[key].shape[0], config.relative_text_len)
        if src_window != config.window_size:
            report.adapted.append(
                f"{key}: image rows resized from a {src_window}x{src_window} to a "
                f"{config.window_size}x{config.window_size} window (bicubic)"
            )
            state[key] = resize_relative_table(state[key], src_window, config.window_size)

    key = "transformer.pos_embed"
    if key in state and config.absolute_position and state[key].shape[1] != config.num_patches + 1:
        state[key] = resize_absolute_positions(state[key], config.window_size)
        report.adapted.append(f"{key}: resized to a {config.window_size}x{config.window_size} grid (bicubic)")

    key = "token_type_embeddings.weight"
    if key in state and state[key].shape[0] == 2 and config.num_modality_types == 3:
        # NLVR2's second image starts from the image embedding, as the official code does.
        state[key] = torch.cat([state[key], state[key][1:2]], dim=0)
        report.adapted.append(f"{key}: row 2 (second image) initialised from row 1 (image)")
    return state


def resize_absolute_positions(pos_embed: torch.Tensor, window: int) -> torch.Tensor:
    """Bicubic resize of ``[1, 1 + s*s, D]`` absolute image positions to ``window``."""
    cls, grid = pos_embed[:, :1], pos_embed[:, 1:]
    side = int(grid.shape[1] ** 0.5)
    grid = grid.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=(window, window), mode="bicubic", align_corners=False)
    return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, window * window, -1).to(pos_embed.dtype)], dim=1)


def load_official(
    path_or_state_dict: StateDictSource,
    size_or_config: Union[str, VLMoConfig],
    image_size: Optional[int] = None,
    allow_missing: Iterable[str] = (),
    allow_unexpected: Iterable[str] = (),
    return_report: bool = False,
):
    """Build a :class:`VLMo` from an official checkpoint.

    Args:
        path_or_state_dict: a ``.pt``/``.ckpt`` file or a state dict (raw, or under
            ``state_dict`` / ``module`` / ``model``).
        size_or_config: a named size (heads then follow the checkpoint) or a config.
        image_size: load at another resolution (e.g. 384, 480); the relative table's
            image rows are interpolated, every other row is kept exactly.
        allow_missing / allow_unexpected: globs of keys that may be absent from the
            file / present only in the file, e.g. ``["*mlp_vl*", "*norm2_vl*"]`` when
            stage 3 starts from a text-only checkpoint. Anything else is an error.
    """
    state = read_state_dict(path_or_state_dict)
    config = config_from_official(state, size_or_config, image_size)
    check_same_size(state, config, "the official checkpoint")
    report = LoadReport()
    state = adapt_official_state_dict(state, config, report)
    model = VLMo(config)
    check_and_load(model, state, allow_missing, allow_unexpected, report, source="official checkpoint")
    return (model, report) if return_report else model


def official_state_dict(model: VLMo) -> dict[str, torch.Tensor]:
    """The model's weights in the official layout (with BERT's ``position_ids`` buffer)."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    state["text_embeddings.position_ids"] = torch.arange(model.config.max_text_len).unsqueeze(0)
    return state


def save_official(model: VLMo, path: Union[str, os.PathLike]) -> None:
    """Write a raw state dict the official code (and :func:`load_official`) loads."""
    torch.save(official_state_dict(model), path)
