"""Numerical parity with the official implementation on its own reference file."""

from __future__ import annotations

import pytest
import torch

from vlmo_composer import VLMoConfig, load_official, save_official
from vlmo_composer.checkpoints import read_state_dict

TOL = 1e-5


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item()


def record_block_outputs(model):
    calls = []
    hooks = [blk.register_forward_hook(lambda m, i, o: calls.append(o.detach())) for blk in model.blocks]
    return calls, hooks


@pytest.fixture(scope="module")
def loaded(official_tiny):
    model = load_official(official_tiny["state_dict"], "tiny").eval()
    return model


def test_tiny_config_is_the_reference_configuration(official_tiny):
    dims, cfg = official_tiny["meta"]["dims"], VLMoConfig.named("tiny")
    assert (cfg.hidden_size, cfg.ffn_size, cfg.num_layers, cfg.num_heads) == (dims["D"], dims["F"], dims["L"], dims["H"])
    assert cfg.num_layers - cfg.vl_ffn_start == dims["Lv"]
    assert (cfg.patch_size, cfg.max_text_len, cfg.vocab_size) == (dims["patch"], dims["Tt"], dims["V"])
    assert cfg.image_size == official_tiny["config"]["image_size"]
    assert cfg.relative_text_len == official_tiny["config"]["max_text_len_of_initckpt"]


def test_relative_position_indices_equal_the_official_buffers(official_tiny, loaded):
    buffers = official_tiny["buffers"]
    assert torch.equal(loaded.layout.image_index(), buffers["relative_position_index"])
    assert torch.equal(loaded.layout.text_index(8), buffers["text_relative_position_index"])
    assert torch.equal(loaded.layout.fused_index(8), buffers["text_imag_relative_position_index"].long())
    assert loaded.relative_position_bias_table.shape == official_tiny["state_dict"]["relative_position_bias_table"].shape


@torch.no_grad()
def test_unimodal_outputs_match(official_tiny, loaded):
    inp, out = official_tiny["inputs"], official_tiny["outputs"]
    calls, hooks = record_block_outputs(loaded)
    text = loaded.forward_text(inp["text_ids"], inp["text_masks"], with_vl=True)
    text_hidden = torch.stack(calls)
    calls.clear()
    image = loaded.forward_image(inp["image"], with_vl=True)
    image_hidden = torch.stack(calls)
    for h in hooks:
        h.remove()
    t_cls, t_vl = loaded.itc_text_features(text)
    i_cls, i_vl = loaded.itc_image_features(image)
    assert max_err(text_hidden, out["hidden.text"]) < TOL
    assert max_err(image_hidden, out["hidden.image"]) < TOL
    assert max_err(text.states, out["text.text_feats"]) < TOL
    assert max_err(text.last_hidden_state[:, 0], out["text.raw_cls_feats"]) < TOL
    assert max_err(t_cls, out["text.cls_feats"]) < TOL
    assert max_err(t_vl, out["text.cls_vlffn_feats"]) < TOL
    assert max_err(image.states, out["image.image_feats"]) < TOL
    assert max_err(image.last_hidden_state[:, 0], out["image.raw_cls_feats"]) < TOL
    assert max_err(i_cls, out["image.cls_feats"]) < TOL
    assert max_err(i_vl, out["image.cls_vlffn_feats"]) < TOL
    # The public single-call API gives the same embeddings.
    assert max_err(loaded.encode_text(inp["text_ids"], inp["text_masks"]), out["text.cls_feats"]) < TOL
    assert max_err(loaded.encode_image(inp["image"]), out["image.cls_feats"]) < TOL
    assert max_err(loaded.logit_scale.exp() * i_cls @ t_cls.T, out["itc.i2t_logits"]) < TOL
    assert max_err(loaded.logit_vl_scale.exp() * i_vl @ t_vl.T, out["itc.vl_i2t_logits"]) < TOL


@torch.no_grad()
@pytest.mark.parametrize("variant,ids_key", [("fusion", "text_ids"), ("fusion_mlm", "text_ids_mlm")])
def test_fusion_outputs_and_heads_match(official_tiny, loaded, variant, ids_key):
    inp, out = official_tiny["inputs"], official_tiny["outputs"]
    calls, hooks = record_block_outputs(loaded)
    fused = loaded.fuse(inp[ids_key], inp["text_masks"], inp["image"])
    for h in hooks:
        h.remove()
    assert max_err(torch.stack(calls), out[f"hidden.{variant}"]) < TOL
    assert max_err(fused.text_states, out[f"{variant}.text_feats"]) < TOL
    assert max_err(fused.image_states, out[f"{variant}.image_feats"]) < TOL
    assert max_err(fused.pooled, out[f"{variant}.cls_feats"]) < TOL
    assert max_err(fused.text_states[:, 0], out[f"{variant}.raw_cls_feats"]) < TOL
    if variant == "fusion":
        assert max_err(loaded.itm_logits(fused.pooled), out["heads.itm_logits_pos"]) < TOL
    else:
        assert max_err(loaded.mlm_logits(fused.text_states), out["heads.mlm_logits"]) < TOL


def test_official_round_trip_is_exact(official_tiny, tmp_path):
    path = tmp_path / "official.pt"
    torch.save({"state_dict": official_tiny["state_dict"]}, path)
    model = load_official(path, "tiny")
    save_official(model, tmp_path / "back.pt")
    back = read_state_dict(tmp_path / "back.pt")
    original = official_tiny["state_dict"]
    assert back.keys() == original.keys()
    for key in original:
        assert back[key].dtype == original[key].dtype, key
        assert torch.equal(back[key], original[key]), key
