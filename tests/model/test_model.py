"""Model construction: sizes, parameter counts, meta init, FSDP hooks, clear input errors."""

from __future__ import annotations

import pytest
import torch

from vlmo_composer import VLMo, VLMoConfig
from vlmo_composer.model.layers import MoMEBlock


def build_on_meta(name: str, **overrides) -> VLMo:
    with torch.device("meta"):
        return VLMo(VLMoConfig.named(name, **overrides))


@pytest.mark.parametrize(
    "name,official",
    [("base", 175.3e6), ("large", 561.1e6), ("base_plus", 166.6e6)],
)
def test_backbone_parameter_counts_match_the_official_code(name, official):
    count = build_on_meta(name).num_parameters(backbone_only=True)
    assert abs(count - official) / official < 1e-3, count


def test_stage3_base_parameter_count():
    count = build_on_meta("base").num_parameters()
    assert abs(count - 202.4e6) / 202.4e6 < 1e-3, count


def test_named_sizes_are_the_official_architectures():
    base, large, plus = (VLMoConfig.named(n) for n in ("base", "large", "base_plus"))
    assert (base.num_layers, base.hidden_size, base.num_heads, base.ffn_size, base.vl_ffn_start) == (12, 768, 12, 3072, 10)
    assert (large.num_layers, large.hidden_size, large.num_heads, large.ffn_size, large.vl_ffn_start) == (24, 1024, 16, 4096, 21)
    assert plus.absolute_position and not plus.relative_position and plus.layer_scale_init is None
    assert (base.image_size, base.max_text_len, large.image_size, large.max_text_len) == (224, 40, 224, 40)
    model = build_on_meta("base")
    assert model.relative_position_bias_table.shape == (1126, 12 * 12)
    assert [blk.with_vl_ffn for blk in model.blocks] == [False] * 10 + [True] * 2


def test_large_model_on_meta_materialises_with_param_init_fn():
    """What FSDP does with meta init: to_empty, then param_init_fn per module."""
    model = build_on_meta("tiny")
    assert model.blocks[0].norm1.weight.is_meta
    for module in model.modules():  # as Composer's FSDP does: modules owning meta tensors, one by one
        if any(p.is_meta for p in module.parameters(recurse=False)):
            module.to_empty(device="cpu", recurse=False)
            model.param_init_fn(module)
    assert not any(p.is_meta for p in model.parameters())
    bound = (3 * 16 * 16) ** -0.5  # PyTorch's default conv init: uniform within 1/sqrt(fan_in)
    proj = model.transformer.patch_embed.proj.weight
    assert proj.abs().max() <= bound and proj.std() > bound / 4
    assert torch.equal(model.blocks[0].norm1.weight, torch.ones(64))
    assert torch.equal(model.blocks[1].gamma_1, torch.full((64,), 0.1))
    assert torch.equal(model.relative_position_bias_table, torch.zeros_like(model.relative_position_bias_table))
    assert model.logit_scale.item() == pytest.approx(2.6592600, abs=1e-6)
    assert model.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.2)
    # Large builds on meta without memory and wraps one FSDP unit per block.
    large = build_on_meta("large")
    assert sum(large.fsdp_wrap_fn(m) for m in large.modules()) == 24
    assert all(large.activation_checkpointing_fn(b) for b in large.blocks)
    assert not large.fsdp_wrap_fn(large.pooler)


def test_base_plus_runs_with_absolute_positions():
    torch.manual_seed(0)
    model = VLMo(VLMoConfig.named("base_plus", num_layers=2, vl_ffn_start=1, image_size=32, max_text_len=8)).eval()
    assert model.relative_position_bias_table is None and model.blocks[0].gamma_1 is None
    ids = torch.randint(1000, 2000, (2, 8))
    out = model.fuse(ids, torch.ones_like(ids), torch.randn(2, 3, 32, 32))
    assert out.pooled.shape == (2, 544) and torch.isfinite(out.pooled).all()
    # Absolute text positions matter: permuting tokens changes the text CLS.
    perm = model.encode_text(ids.flip(1))
    assert not torch.allclose(perm, model.encode_text(ids))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return VLMo(VLMoConfig.named("tiny")).eval()


def test_bad_inputs_give_clear_errors(tiny):
    ids = torch.randint(5, 99, (2, 8))
    mask = torch.ones_like(ids)
    image = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match="text length 9 exceeds the model's max_text_len=8"):
        tiny.encode_text(torch.randint(5, 99, (2, 9)))
    with pytest.raises(ValueError, match="image size 48x48 does not match the model's 32x32"):
        tiny.encode_image(torch.randn(2, 3, 48, 48))
    with pytest.raises(ValueError, match=r"pixel_values must be \[batch, 3, H, W\]"):
        tiny.encode_image(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="attention_mask shape"):
        tiny.fuse(ids, mask[:, :4], image)
    with pytest.raises(ValueError, match="batch sizes differ"):
        tiny.fuse(ids, mask, image[:1])
    with pytest.raises(ValueError, match="image_type_id=2"):
        tiny.fuse(ids, mask, image, image_type_id=2)
    with pytest.raises(KeyError, match="unknown VLMo size 'huge'"):
        VLMoConfig.named("huge")
    with pytest.raises(KeyError, match="unknown VLMoConfig keys \\['hiden_size'\\]"):
        VLMoConfig.named("tiny", hiden_size=3)
    with pytest.raises(ValueError, match="not divisible"):
        VLMoConfig.named("tiny", num_heads=3)


def test_shorter_text_equals_padded_text(tiny):
    """Relative indices are sliced for shorter text: the result equals padding the text."""
    ids = torch.randint(5, 99, (2, 5))
    padded = torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], dim=1)
    pmask = torch.cat([torch.ones(2, 5, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long)], dim=1)
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        short = tiny.fuse(ids, torch.ones_like(ids), image)
        long = tiny.fuse(padded, pmask, image)
        assert torch.allclose(short.pooled, long.pooled, atol=1e-6)
        assert torch.allclose(short.image_states, long.image_states, atol=1e-6)
        assert torch.allclose(tiny.encode_text(ids), tiny.encode_text(padded, pmask), atol=1e-6)


def test_activation_checkpointing_gives_identical_gradients():
    torch.manual_seed(0)
    plain = VLMo(VLMoConfig.named("tiny", drop_path_rate=0.0))
    ckpt = VLMo(VLMoConfig.named("tiny", drop_path_rate=0.0, activation_checkpointing=True))
    ckpt.load_state_dict(plain.state_dict())
    ids, image = torch.randint(5, 99, (2, 8)), torch.randn(2, 3, 32, 32)
    grads = []
    for model in (plain, ckpt):
        model.train()
        model.fuse(ids, torch.ones_like(ids), image).pooled.sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert all(torch.allclose(grads[0][k], grads[1][k], atol=1e-6) for k in grads[0])


def test_stochastic_depth_is_linear_and_train_only():
    model = VLMo(VLMoConfig.named("base", drop_path_rate=0.1, num_layers=3, vl_ffn_start=2, image_size=32))
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in model.blocks]
    assert rates == pytest.approx([0.0, 0.05, 0.1])
    assert isinstance(model.blocks[0], MoMEBlock)
