"""Converters: BEiT parity, safetensors and resolution round trips, partial loads, bad files."""

from __future__ import annotations

import pickle

import pytest
import timm
import torch

from vlmo_composer import VLMo, VLMoConfig, load_beit, load_official, load_safetensors, save_safetensors
from vlmo_composer.checkpoints import official_state_dict
from vlmo_composer.model.relative_position import RelativePositionLayout


def test_beit_timm_parity_base():
    torch.manual_seed(0)
    beit = timm.create_model("beit_base_patch16_224", pretrained=False).eval()
    with torch.no_grad():  # random relative tables and layer scales, so bugs cannot hide behind init values
        for blk in beit.blocks:
            blk.attn.relative_position_bias_table.normal_(0, 0.5)
            blk.gamma_1.uniform_(0.05, 0.5)
            blk.gamma_2.uniform_(0.05, 0.5)
            blk.attn.q_bias.normal_(0, 0.1)
            blk.attn.v_bias.normal_(0, 0.1)
    model = VLMo(VLMoConfig.named("base", drop_path_rate=0.0)).eval()
    report = load_beit(beit.state_dict(), model)
    assert "head.weight" in report.allowed_unexpected and "fc_norm.weight" in report.allowed_unexpected
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ours = model.forward_image(x).last_hidden_state
        theirs = beit.forward_features(x)
    assert (ours - theirs).abs().max().item() < 1e-5
    # The V-FFN got BEiT's MLP; the L-FFN stayed as initialised.
    assert torch.equal(model.blocks[3].mlp_imag.fc1.weight, beit.blocks[3].mlp.fc1.weight)
    assert not torch.equal(model.blocks[3].mlp_text.fc1.weight, beit.blocks[3].mlp.fc1.weight)


def test_beit_official_layout_with_shared_table():
    """Official BEiT pre-training files: under 'model', one shared table, mask_token, lm_head."""
    torch.manual_seed(0)
    model = VLMo(VLMoConfig.named("tiny")).eval()
    cfg = model.config
    rows = RelativePositionLayout(cfg.window_size, cfg.relative_text_len).num_image_rows
    source = VLMo(VLMoConfig.named("tiny"))
    beit = {"cls_token": torch.randn(1, 1, 64), "mask_token": torch.randn(1, 1, 64),
            "patch_embed.proj.weight": torch.randn(64, 3, 16, 16), "patch_embed.proj.bias": torch.randn(64),
            "rel_pos_bias.relative_position_bias_table": torch.randn(rows, cfg.num_heads),
            "lm_head.weight": torch.randn(8192, 64)}
    for i, blk in enumerate(source.blocks):
        for k, v in blk.state_dict().items():
            beit_key = k.replace("mlp_imag", "mlp").replace("norm2_imag", "norm2")
            if "text" not in k and "_vl" not in k:
                beit[f"blocks.{i}.{beit_key}"] = torch.randn_like(v)
    load_beit({"model": beit}, model)
    table = model.relative_position_bias_table
    for layer in range(cfg.num_layers):
        cols = slice(layer * cfg.num_heads, (layer + 1) * cfg.num_heads)
        assert torch.equal(table[:rows, cols], beit["rel_pos_bias.relative_position_bias_table"])
    assert torch.equal(table[rows:], torch.zeros_like(table[rows:]))  # text rows untouched
    assert torch.equal(model.blocks[1].norm2_imag.weight, beit["blocks.1.norm2.weight"])


def test_beit_missing_key_is_named():
    model = VLMo(VLMoConfig.named("base", drop_path_rate=0.0))
    state = timm.create_model("beit_base_patch16_224", pretrained=False).state_dict()
    del state["blocks.4.attn.qkv.weight"]
    with pytest.raises(KeyError, match=r"blocks\.4\.attn\.qkv\.weight"):
        load_beit(state, model)


def test_safetensors_round_trip_is_exact(official_tiny, tmp_path):
    model = load_official(official_tiny["state_dict"], "tiny")
    save_safetensors(model, tmp_path / "export")
    back = load_safetensors(tmp_path / "export")
    assert back.config == model.config
    a, b = model.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_interpolation_to_384_keeps_non_image_rows(official_tiny):
    state = dict(official_tiny["state_dict"])
    base_at_224 = VLMoConfig.named("tiny", image_size=224)
    layout224 = RelativePositionLayout(base_at_224.window_size, 196)
    layout384 = RelativePositionLayout(384 // 16, 196)
    torch.manual_seed(0)
    table = torch.randn(layout224.num_rows, 4)
    state["relative_position_bias_table"] = table
    model = load_official(state, "tiny", image_size=384)
    new = model.relative_position_bias_table.detach()
    assert new.shape == (layout384.num_rows, 4)
    # Image cls rows, cross-modal rows and every text row are kept exactly.
    assert torch.equal(new[layout384.num_grid_rows:], table[layout224.num_grid_rows:])
    # Same size is the identity.
    same = load_official(state, "tiny", image_size=224)
    assert torch.equal(same.relative_position_bias_table, table)


def test_resized_grid_equals_bicubic_reference(official_tiny):
    state = dict(official_tiny["state_dict"])
    torch.manual_seed(1)
    table = torch.randn(RelativePositionLayout(2, 196).num_rows, 4)
    state["relative_position_bias_table"] = table
    model = load_official(state, "tiny", image_size=64)  # window 2 -> 4
    grid = table[:9].T.reshape(1, 4, 3, 3)
    expected = torch.nn.functional.interpolate(grid, size=(7, 7), mode="bicubic", align_corners=False)
    assert torch.allclose(model.relative_position_bias_table[:49].detach(), expected.reshape(4, 49).T)


def test_missing_unexpected_and_shape_errors_name_the_key(official_tiny):
    state = dict(official_tiny["state_dict"])
    del state["transformer.blocks.1.mlp_vl.fc1.weight"]
    with pytest.raises(KeyError, match=r"transformer\.blocks\.1\.mlp_vl\.fc1\.weight"):
        load_official(state, VLMoConfig.named("tiny"))
    state = dict(official_tiny["state_dict"], **{"extra.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match=r"extra\.weight"):
        load_official(state, "tiny")
    state = dict(official_tiny["state_dict"])
    state["pooler.dense.weight"] = torch.zeros(64, 32)
    with pytest.raises(KeyError, match=r"pooler\.dense\.weight: official checkpoint \(64, 32\)"):
        load_official(state, "tiny")


def test_partial_load_for_stage3_from_text_only_checkpoint(official_tiny):
    """A text-stage checkpoint has no VL-FFN: loading it into a stage-3 model must be explicit."""
    state = {k: v for k, v in official_tiny["state_dict"].items() if "_vl" not in k or "itc_vl" in k or "logit_vl" in k}
    with pytest.raises(KeyError, match="mlp_vl"):
        load_official(state, VLMoConfig.named("tiny"))
    model, report = load_official(
        state, VLMoConfig.named("tiny"), allow_missing=["*mlp_vl*", "*norm2_vl*"], return_report=True
    )
    assert sorted(report.allowed_missing) == sorted(k for k in official_tiny["state_dict"] if "mlp_vl" in k or "norm2_vl" in k)
    # By name, the config follows the file instead: no VL-FFN at all.
    assert load_official(state, "tiny").config.vl_ffn_start == 2


def test_heads_follow_the_checkpoint_and_nlvr2_gets_a_second_image_type(official_tiny):
    state = dict(official_tiny["state_dict"])
    for prefix in ("mlm_score", "itm_score", "itc_vl"):
        state = {k: v for k, v in state.items() if not k.startswith(prefix)}
    state.pop("logit_vl_scale")
    state["nlvr2_classifier.0.weight"] = torch.randn(128, 128)
    state["nlvr2_classifier.0.bias"] = torch.randn(128)
    state["nlvr2_classifier.1.weight"] = torch.randn(128)
    state["nlvr2_classifier.1.bias"] = torch.randn(128)
    state["nlvr2_classifier.3.weight"] = torch.randn(2, 128)
    state["nlvr2_classifier.3.bias"] = torch.randn(2)
    model = load_official(state, "tiny")
    assert model.config.nlvr2_head and not model.config.mlm_head and not model.config.itm_head
    types = model.token_type_embeddings.weight
    assert types.shape[0] == 3 and torch.equal(types[2], types[1])
    assert torch.equal(types[1], official_tiny["state_dict"]["token_type_embeddings.weight"][1])


def test_deepspeed_module_prefix_and_longer_text_positions(official_tiny, tmp_path):
    state = dict(official_tiny["state_dict"])
    state["text_embeddings.position_embeddings.weight"] = torch.randn(196, 64)
    path = tmp_path / "ds.pt"
    torch.save({"module": {f"module.{k}": v for k, v in state.items()}}, path)
    model, report = load_official(path, "tiny", return_report=True)
    assert torch.equal(model.text_embeddings.position_embeddings.weight, state["text_embeddings.position_embeddings.weight"][:8])
    assert any("first 8 of 196 rows" in line for line in report.adapted)


def test_position_table_of_another_text_length_loads_under_relative_positions():
    """Stage chaining: a 196-token text-stage state dict loads into a 40-token model and back."""
    short, long = VLMo(VLMoConfig.named("tiny")), VLMo(VLMoConfig.named("tiny", max_text_len=196))
    short.load_state_dict(long.state_dict())
    assert torch.equal(short.text_embeddings.position_embeddings.weight, long.text_embeddings.position_embeddings.weight[:8])
    before = long.text_embeddings.position_embeddings.weight.detach().clone()
    long.load_state_dict(short.state_dict())
    assert torch.equal(long.text_embeddings.position_embeddings.weight, before)  # padded with its own rows
    absolute = VLMo(VLMoConfig.named("base_plus", num_layers=1, vl_ffn_start=1, image_size=32, max_text_len=8))
    state = absolute.state_dict()
    state["text_embeddings.position_embeddings.weight"] = torch.zeros(9, 544)
    with pytest.raises(RuntimeError, match="size mismatch"):  # used positions must match exactly
        absolute.load_state_dict(state)


def test_pickled_code_is_refused(tmp_path):
    class NotATensor:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": NotATensor()}, fh)
    with pytest.raises(ValueError, match=r"(?s)weights_only=True.*Composer checkpoint.*pickle.*trust"):
        load_official(path, "tiny")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_official(tmp_path / "nope.pt", "tiny")


def test_official_state_dict_has_official_keys(official_tiny):
    model = load_official(official_tiny["state_dict"], "tiny")
    assert official_state_dict(model).keys() == official_tiny["state_dict"].keys()
