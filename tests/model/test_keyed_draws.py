"""Drop path and text dropout keyed by (seed, step, sample id): a row's masks do not depend on
which rows share its batch, so one process and any split over ranks draw the same ones."""

from __future__ import annotations

import torch

from vlmo_composer import VLMo, VLMoConfig
from vlmo_composer.common.keyed_draws import element_uniforms, row_keys, step_key, unit_uniforms
from vlmo_composer.model.layers import DropPath
from vlmo_composer.training.profiling import synthetic_vl_batch


def test_keyed_numbers_are_uniform_and_do_not_depend_on_the_batch():
    keys = row_keys(step_key(17, 4), torch.arange(100_000), stream=1)
    u = unit_uniforms(keys)
    assert 0.0 <= u.min() and u.max() < 1.0 and abs(u.mean().item() - 0.5) < 0.005
    assert abs((u < 0.1).float().mean().item() - 0.1) < 0.005
    assert torch.equal(unit_uniforms(keys[5:9]), u[5:9])
    grid = element_uniforms(keys[:64], (32, 16))
    assert abs((grid < 0.1).float().mean().item() - 0.1) < 0.01
    assert torch.equal(element_uniforms(keys[3:4], (32, 16)), grid[3:4])  # not the batch's other rows
    assert torch.equal(element_uniforms(keys[:2], (8, 16)), grid[:2, :8])  # nor its length (trimmed text)
    assert not torch.equal(unit_uniforms(row_keys(step_key(17, 5), torch.arange(8), 1)), u[:8])  # another step


def test_keyed_drop_path_keeps_or_drops_whole_rows():
    drop = DropPath(0.5).train()
    x = torch.ones(4000, 3, 2)
    out = drop(x, row_keys(step_key(1, 1), torch.arange(4000), 0))
    kept = out[:, 0, 0] > 0
    assert torch.equal(out[kept], torch.full_like(out[kept], 2.0)) and torch.equal(out[~kept], torch.zeros_like(out[~kept]))
    assert 0.45 < kept.float().mean().item() < 0.55


def test_a_split_batch_draws_the_masks_of_the_whole_batch():
    """The fused pass with drop path 0.5 and text dropout 0.3: rows computed as one batch of 6
    equal rows computed as the halves two ranks would hold; without keys they would not."""
    torch.manual_seed(0)
    config = VLMoConfig.named("tiny", drop_path_rate=0.5, text_embed_dropout=0.3)
    model = VLMo(config).train()
    batch = synthetic_vl_batch(config, 6)
    ids = torch.tensor([11, 4, 7, 0, 23, 5])
    key = step_key(17, 3)

    def pooled(rows: slice, step_key_: torch.Tensor = key) -> torch.Tensor:
        keys = row_keys(step_key_, ids[rows], stream=3)
        return model.fuse(batch["input_ids"][rows], batch["attention_mask"][rows], batch["pixel_values"][rows],
                          draw_keys=keys).pooled

    whole = pooled(slice(None))
    halves = torch.cat([pooled(slice(0, 3)), pooled(slice(3, 6))])
    assert torch.allclose(whole, halves, atol=1e-6, rtol=0)
    assert not torch.allclose(whole, pooled(slice(None), step_key(17, 4)), atol=1e-3)  # masks change per step
    model.eval()
    with torch.no_grad():
        assert torch.equal(pooled(slice(None)), pooled(slice(None), step_key(17, 4)))  # eval: no draws
