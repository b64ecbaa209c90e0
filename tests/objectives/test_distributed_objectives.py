"""Rank invariance of the global-batch objectives with real processes (gloo)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from distributed import run_distributed
from vlmo_composer import VLMo, VLMoConfig
from vlmo_composer.objectives import build_itm_batch, contrastive_loss, sample_hard_negatives

pytestmark = pytest.mark.distributed

GLOBAL_BATCH = 8


def make_model_and_batch():
    torch.manual_seed(0)
    model = VLMo(VLMoConfig.named("tiny", vocab_size=1000, drop_path_rate=0.0, text_embed_dropout=0.0))
    with torch.no_grad():  # spread the features so the loss and gradients are far from trivial
        model.relative_position_bias_table.normal_(0, 0.5)
    gen = torch.Generator().manual_seed(1)
    batch = {
        "pixel_values": torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=gen),
        "input_ids": torch.randint(5, 1000, (GLOBAL_BATCH, 8), generator=gen),
        "attention_mask": torch.ones(GLOBAL_BATCH, 8, dtype=torch.long),
    }
    batch["attention_mask"][::3, 6:] = 0
    return model, batch


def itc_loss_and_grads(model, batch):
    image = model.forward_image(batch["pixel_values"], with_vl=True)
    text = model.forward_text(batch["input_ids"], batch["attention_mask"], with_vl=True)
    (ic, iv), (tc, tv) = model.itc_image_features(image), model.itc_text_features(text)
    itc = contrastive_loss(ic, tc, model.logit_scale)
    itc_vl = contrastive_loss(iv, tv, model.logit_vl_scale)
    loss = 0.5 * (itc.loss + itc_vl.loss)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, itc


def _ranked(rank, world):
    model, batch = make_model_and_batch()
    local = GLOBAL_BATCH // world
    mine = {k: v[rank * local:(rank + 1) * local] for k, v in batch.items()}
    loss, grads, itc = itc_loss_and_grads(model, mine)
    # What DDP does: average the gradients and (for logging) the loss over ranks.
    for g in grads.values():
        dist.all_reduce(g)
        g /= world
    dist.all_reduce(loss)
    loss /= world
    # Hard negatives come from the gathered global batch and carry the other rank's real inputs.
    draws, pulled_ok = [], True
    for seed in range(20):
        torch.manual_seed(100 + seed + rank)
        neg = sample_hard_negatives(itc.logits_per_image, itc.logits_per_text, itc.targets)
        itm = build_itm_batch(mine["input_ids"], mine["attention_mask"], mine["pixel_values"], neg)
        draws.append(torch.cat([neg.image_for_text, neg.text_for_image]))
        pulled_ok &= torch.equal(itm.pixel_values[local:2 * local], batch["pixel_values"][neg.image_for_text])
        pulled_ok &= torch.equal(itm.input_ids[2 * local:], batch["input_ids"][neg.text_for_image])
        own = torch.arange(local) + rank * local
        pulled_ok &= not (neg.image_for_text == own).any() and not (neg.text_for_image == own).any()
    return {"loss": loss, "grads": grads, "draws": torch.cat(draws), "pulled_ok": pulled_ok}


def test_itc_loss_and_gradients_do_not_depend_on_the_number_of_ranks():
    single_model, batch = make_model_and_batch()
    single_loss, single_grads, _ = itc_loss_and_grads(single_model, batch)
    ranked = run_distributed(_ranked, world=2)[0]
    assert abs(ranked["loss"].item() - single_loss.item()) < 1e-5
    assert ranked["grads"].keys() == single_grads.keys()
    worst = max((ranked["grads"][n] - g).abs().max().item() for n, g in single_grads.items())
    assert worst < 1e-5, worst
    # The gradient is not trivially small: a 1/#ranks scaling (the official bug) would show.
    scale = max(g.abs().max().item() for g in single_grads.values())
    assert scale > 1e-3


def test_hard_negatives_are_drawn_from_every_rank():
    ranked = run_distributed(_ranked, world=2)[0]
    local = GLOBAL_BATCH // 2
    assert ranked["pulled_ok"]
    from_other_rank = (ranked["draws"] >= local).float().mean().item()  # rank 0's view: indices >= 4 are rank 1's
    assert 0.2 < from_other_rank < 0.9, from_other_rank
