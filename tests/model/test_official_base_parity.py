"""Numerical parity with the official VLMo code at the base size (768 wide, 12 layers, 224 px).

``tests/fixtures/official_vlmo_base_random.pt`` holds what the official implementation
(microsoft/unilm ``vlmo/``, run outside this repo) computed for a batch of two image-text
pairs with random weights. The weights themselves are not stored: every official parameter
is regenerated from a seeded recipe (``replay_weights``), loaded with
:func:`vlmo_composer.load_official`, and each of our forward paths must reproduce the
official tensors to 1e-5 in fp32.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path

import pytest
import torch

import vlmo_composer

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "official_vlmo_base_random.pt"
TOLERANCE = 1e-5


def replay_weights(keys: list, recipe: dict) -> dict[str, torch.Tensor]:
    """Rebuild the official state dict: key ``i`` is ``randn(shape) * std + mean`` seeded ``base_seed + i``.

    ``(std, mean)`` come from the first rule whose glob matches the key, so layer scales sit
    near 0.1, LayerNorm weights near 1 and the relative-position table is far from zero.
    """
    state = {}
    for i, (name, shape, dtype) in enumerate(keys):
        std, mean = next((s, m) for pattern, s, m in recipe["rules"] if fnmatchcase(name, pattern))
        generator = torch.Generator().manual_seed(recipe["base_seed"] + i)
        state[name] = (torch.randn(shape, generator=generator) * std + mean).to(getattr(torch, dtype))
    return state


def assert_matches(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Every expected tensor is reproduced within TOLERANCE (all errors reported at once)."""
    assert set(actual) == set(expected), sorted(set(actual) ^ set(expected))
    errors = {}
    for name, want in expected.items():
        got = actual[name]
        assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != official {tuple(want.shape)}"
        errors[name] = (got - want).abs().max().item()
    print({name: f"{err:.2e}" for name, err in errors.items()})
    bad = {name: err for name, err in errors.items() if not err <= TOLERANCE}
    assert not bad, f"max abs error above {TOLERANCE}: {bad}"


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURE, weights_only=True)


@pytest.fixture(scope="module")
def model(fixture: dict) -> vlmo_composer.VLMo:
    state = replay_weights(fixture["keys"], fixture["recipe"])
    return vlmo_composer.load_official(state, "base").eval()


@pytest.fixture(scope="module")
def inputs(fixture: dict) -> dict[str, torch.Tensor]:
    batch = dict(fixture["inputs"])
    batch["image"] = batch.pop("pixels").float() / 127.5 - 1  # meta["image_from_pixels"]
    return batch


def test_fixture_is_the_base_model_in_the_official_layout(fixture: dict, model: vlmo_composer.VLMo) -> None:
    meta = fixture["meta"]
    assert meta["size"] == "base" and meta["dims"]["D"] == 768 and meta["dims"]["L"] == 12
    ours = model.state_dict()
    assert [name for name, _, _ in fixture["keys"]] == sorted(ours)
    assert all(list(ours[name].shape) == shape for name, shape, _ in fixture["keys"])
    assert model.config.vl_ffn_start == 10 and model.config.max_text_len == 40
    # The recipe must exercise the relative table and every padding/MLM path of the inputs.
    assert model.relative_position_bias_table.std() > 0.4
    assert fixture["inputs"]["text_masks"].sum(1).tolist() == [40, 23]
    assert (fixture["inputs"]["text_labels_mlm"] != -100).sum() == fixture["outputs"]["heads"]["mlm_positions"].shape[0]


@pytest.fixture(scope="module")
def text_out(model: vlmo_composer.VLMo, inputs: dict):
    with torch.no_grad():
        return model.forward_text(inputs["text_ids"], inputs["text_masks"], with_vl=True)


@pytest.fixture(scope="module")
def image_out(model: vlmo_composer.VLMo, inputs: dict):
    with torch.no_grad():
        return model.forward_image(inputs["image"], with_vl=True)


@torch.no_grad()
def test_text_pass_matches_official_infer_text(fixture: dict, model: vlmo_composer.VLMo, text_out) -> None:
    out = text_out
    itc, itc_vl = model.itc_text_features(out)
    actual = {
        "text_feats": out.states,
        "raw_cls_feats": out.last_hidden_state[:, 0],
        "cls_feats": itc,
        "cls_vlffn_feats": itc_vl,
    }
    assert_matches(actual, fixture["outputs"]["text"])


@torch.no_grad()
def test_image_pass_matches_official_infer_image(fixture: dict, model: vlmo_composer.VLMo, image_out) -> None:
    out = image_out
    itc, itc_vl = model.itc_image_features(out)
    actual = {
        "image_feats_first20": out.states[:, :20],
        "raw_cls_feats": out.last_hidden_state[:, 0],
        "cls_feats": itc,
        "cls_vlffn_feats": itc_vl,
    }
    assert_matches(actual, fixture["outputs"]["image"])


@torch.no_grad()
def test_fusion_and_itm_match_official_infer(fixture: dict, model: vlmo_composer.VLMo, inputs: dict) -> None:
    out = model.fuse(inputs["text_ids"], inputs["text_masks"], inputs["image"])
    actual = {
        "text_feats": out.text_states,
        "image_feats_first20": out.image_states[:, :20],
        "cls_feats": out.pooled,
        "raw_cls_feats": out.text_states[:, 0],  # official infer takes it after the final norm
    }
    assert_matches(actual, fixture["outputs"]["fusion"])
    itm = fixture["outputs"]["heads"]["itm_logits"]
    assert_matches({"itm_logits": model.itm_logits(out.pooled)}, {"itm_logits": itm})


@torch.no_grad()
def test_masked_fusion_and_mlm_match_official(fixture: dict, model: vlmo_composer.VLMo, inputs: dict) -> None:
    out = model.fuse(inputs["text_ids_mlm"], inputs["text_masks"], inputs["image"])
    masked = inputs["text_labels_mlm"] != -100
    heads = fixture["outputs"]["heads"]
    assert torch.equal(masked.nonzero(), heads["mlm_positions"])
    actual = {
        "text_feats_masked": out.text_states[masked],
        "image_feats_first20": out.image_states[:, :20],
        "cls_feats": out.pooled,
        "raw_cls_feats": out.text_states[:, 0],
    }
    assert_matches(actual, fixture["outputs"]["fusion_mlm"])
    assert_matches(
        {"mlm_logits_masked": model.mlm_logits(out.text_states)[masked]},
        {"mlm_logits_masked": heads["mlm_logits_masked"]},
    )


@torch.no_grad()
def test_contrastive_logits_match_official(fixture: dict, model: vlmo_composer.VLMo, text_out, image_out) -> None:
    text_itc, text_itc_vl = model.itc_text_features(text_out)
    image_itc, image_itc_vl = model.itc_image_features(image_out)
    scale, vl_scale = model.logit_scale.exp(), model.logit_vl_scale.exp()
    actual = {
        "logit_scale": scale,
        "logit_vl_scale": vl_scale,
        "i2t_logits": scale * image_itc @ text_itc.t(),
        "vl_i2t_logits": vl_scale * image_itc_vl @ text_itc_vl.t(),
    }
    assert_matches(actual, fixture["outputs"]["itc"])
