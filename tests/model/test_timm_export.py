"""The timm BEiT export of the vision tower: features equal to VLMo's image-only pass,
the key mapping at base size on ``meta``, the written folder and the refusals."""

from __future__ import annotations

import json

import pytest
import timm
import torch

from vlmo_composer import VLMo, VLMoConfig, VLMoInference
from vlmo_composer.checkpoints.timm_export import (
    TIMM_CONFIG_NAME,
    TIMM_WEIGHTS_NAME,
    load_timm_beit,
    main,
    timm_beit_name,
    vlmo_to_timm_beit,
)

# Three vision towers timm must rebuild: base's (relative table + layer scale), base_plus's
# (absolute positions, no layer scale), and one without q/v biases.
VARIANTS = {
    "relative": {},
    "absolute": dict(relative_position=False, absolute_position=True, layer_scale_init=None),
    "no_qkv_bias": dict(qkv_bias=False),
}


def small_model(seed: int, **overrides) -> VLMo:
    """A small VLMo with every parameter random (tables, gammas, biases, the image type row),
    so a wrong or missing mapping shows in the features."""
    torch.manual_seed(seed)
    model = VLMo(VLMoConfig.named("small", drop_path_rate=0.0, **overrides))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.copy_(1 + 0.2 * torch.randn_like(param))
            elif "gamma" in name:
                param.uniform_(0.05, 0.5)
            elif name == "relative_position_bias_table":
                param.normal_(0, 0.5)
            else:
                param.normal_(0, 0.05)
    return model.eval()


def timm_model(name: str, kwargs: dict, state: dict) -> torch.nn.Module:
    beit = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    beit.load_state_dict(state, strict=True)
    return beit.eval()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_timm_features_equal_vlmo_image_features(variant):
    model = small_model(0, **VARIANTS[variant])
    name, kwargs, state = vlmo_to_timm_beit(model)
    assert name == "beit_base_patch16_224" and kwargs["img_size"] == 64 and kwargs["embed_dim"] == 128
    beit = timm_model(name, kwargs, state)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        ours = model.forward_image(x).states
        theirs = beit.forward_features(x)
        pooled = beit(x)  # num_classes=0, global_pool='token': the normed CLS token
    assert theirs.shape == ours.shape == (3, 17, 128)
    assert (ours - theirs).abs().max().item() < 1e-5
    assert (ours[:, 0] - pooled).abs().max().item() < 1e-5


def test_image_type_embedding_is_folded_not_dropped():
    """Zeroing the folded row changes timm's features: the modality embedding is really carried."""
    model = small_model(1)
    name, kwargs, state = vlmo_to_timm_beit(model)
    with torch.no_grad():
        model.token_type_embeddings.weight[1].zero_()
    _, _, unfolded = vlmo_to_timm_beit(model)
    assert not torch.equal(state["cls_token"], unfolded["cls_token"])
    assert not torch.equal(state["patch_embed.proj.bias"], unfolded["patch_embed.proj.bias"])
    assert torch.equal(state["patch_embed.proj.weight"], unfolded["patch_embed.proj.weight"])


def test_base_key_mapping_on_meta_matches_timm_beit_base():
    """Every key of timm's own beit_base_patch16_224 (token pooling, no head), same shapes, strict load."""
    with torch.device("meta"):
        model = VLMo(VLMoConfig.named("base"))
        name, kwargs, state = vlmo_to_timm_beit(model)
        reference = timm.create_model("beit_base_patch16_224", pretrained=False, num_classes=0, global_pool="token")
        exported = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    assert name == "beit_base_patch16_224"
    expected = reference.state_dict()
    assert sorted(state) == sorted(expected)
    bad = {k: (tuple(v.shape), tuple(expected[k].shape)) for k, v in state.items() if v.shape != expected[k].shape}
    assert not bad
    assert all(v.is_meta for v in state.values())
    assert {k: tuple(v.shape) for k, v in exported.state_dict().items()} == {
        k: tuple(v.shape) for k, v in expected.items()
    }
    reference.load_state_dict(state, strict=True, assign=True)
    assert reference.blocks[11].attn.relative_position_bias_table.shape == (27 * 27 + 3, 12)


@pytest.mark.parametrize(
    "size,image_size,expected",
    [("base", 384, "beit_base_patch16_384"), ("large", 224, "beit_large_patch16_224"),
     ("large", 512, "beit_large_patch16_512"), ("base", 480, "beit_base_patch16_224"),
     ("base_plus", 224, "beit_base_patch16_224")],
)
def test_timm_names(size, image_size, expected):
    assert timm_beit_name(VLMoConfig.named(size, image_size=image_size)) == expected


def test_export_writes_a_folder_timm_loads(tmp_path):
    model = small_model(2)
    folder = VLMoInference(model).export(tmp_path / "export", timm=True)
    config = json.loads((folder / TIMM_CONFIG_NAME).read_text())
    assert config["model_name"] == "beit_base_patch16_224" and "num_classes" not in config["kwargs"]
    beit = load_timm_beit(folder)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (model.forward_image(x).states - beit.forward_features(x)).abs().max().item() < 1e-5
    # A later export without timm drops the stale backbone; the module's command line writes it from the folder.
    VLMoInference(model).export(folder, overwrite=True)
    assert not (folder / TIMM_WEIGHTS_NAME).exists() and not (folder / TIMM_CONFIG_NAME).exists()
    assert main([str(folder), str(tmp_path / "timm")]) == 0
    with torch.no_grad():
        assert (beit.forward_features(x) - load_timm_beit(tmp_path / "timm").forward_features(x)).abs().max() < 1e-6


def test_norm_eps_timm_cannot_express_is_refused_before_writing(tmp_path):
    model = VLMo(VLMoConfig.named("tiny", norm_eps=1e-5))
    with pytest.raises(ValueError, match="norm_eps=1e-05"):
        vlmo_to_timm_beit(model)
    with pytest.raises(ValueError, match="norm_eps"):
        VLMoInference(model).export(tmp_path / "export", timm=True)
    assert not (tmp_path / "export").exists()


def test_readme_timm_lines_run_as_printed(tmp_path, monkeypatch):
    """The README's two timm lines, on a folder ``export(..., timm=True)`` wrote under its name."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "timm.create_model" in b)
    model = small_model(3)
    monkeypatch.chdir(tmp_path)
    VLMoInference(model).export("exported/", timm=True)
    namespace = {"cfg": json.load(open("exported/timm_config.json"))}  # the README's sentence before the block
    exec("import safetensors.torch\nimport timm\n" + block, namespace)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (model.forward_image(x).states - namespace["backbone"].forward_features(x)).abs().max().item() < 1e-5
