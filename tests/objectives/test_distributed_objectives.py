"""Rank invariance of the global-batch objectives with real processes (gloo)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from distributed import run_distributed
from vlmo_composer import VLMo, VLMoConfig
from vlmo_composer.objectives import build_itm_batch, contrastive_loss, sample_hard_negatives
from vlmo_composer.objectives.distributed import gather_no_grad
from vlmo_composer.objectives.itm import KeyedDraw, step_key
from vlmo_composer.objectives.mlm import mlm_loss

pytestmark = pytest.mark.distributed

GLOBAL_BATCH = 8
SAMPLE_IDS = torch.tensor([40, 3, 17, 25, 8, 31, 12, 6])  # the batch's global sample ids
KEYED_STEPS = 30


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
    return {"loss": loss, "grads": grads, "draws": torch.cat(draws), "pulled_ok": pulled_ok,
            "keyed": keyed_negatives(itc, SAMPLE_IDS[rank * local:(rank + 1) * local]),
            "mlm_grad": mlm_grad(slice(rank * local, (rank + 1) * local), world)}


def mlm_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """MLM logits and labels with unevenly many masked tokens per half of the batch (7 and 2)."""
    logits = torch.randn(GLOBAL_BATCH, 3, 11, generator=torch.Generator().manual_seed(3))
    labels = torch.full((GLOBAL_BATCH, 3), -100)
    labels[:3, :] = 4
    labels[3, 0] = 2
    labels[5, 1], labels[6, 2] = 7, 1
    return logits, labels


def mlm_grad(rows: slice, world: int) -> torch.Tensor:
    """The gradient of the MLM loss on the logits of ``rows``, averaged over ranks as DDP does."""
    logits, labels = mlm_inputs()
    logits = logits[rows].clone().requires_grad_(True)
    mlm_loss(logits, labels[rows]).backward()
    grad = torch.zeros(GLOBAL_BATCH, *logits.shape[1:])
    grad[rows] = logits.grad
    if world > 1:
        dist.all_reduce(grad)
        grad /= world
    return grad


def keyed_negatives(itc, row_ids: torch.Tensor) -> dict[int, list[tuple[int, int]]]:
    """Per row sample id: the sample ids of its (negative image, negative text) at each step."""
    column_ids = gather_no_grad(row_ids)
    out = {int(i): [] for i in row_ids}
    for step in range(KEYED_STEPS):
        keyed = KeyedDraw(step_key(17, step), row_ids=row_ids, column_ids=column_ids)
        neg = sample_hard_negatives(itc.logits_per_image, itc.logits_per_text, itc.targets, 0.5, keyed)
        for i, image, text in zip(row_ids.tolist(), neg.image_for_text, neg.text_for_image):
            out[i].append((int(column_ids[image]), int(column_ids[text])))
    return out


@pytest.fixture(scope="module")
def ranked() -> dict:
    """Rank 0's results of :func:`_ranked` on 2 gloo processes (one launch for the module)."""
    return run_distributed(_ranked, world=2)


def test_itc_loss_and_gradients_do_not_depend_on_the_number_of_ranks(ranked):
    single_model, batch = make_model_and_batch()
    single_loss, single_grads, _ = itc_loss_and_grads(single_model, batch)
    ranked = ranked[0]
    assert abs(ranked["loss"].item() - single_loss.item()) < 1e-5
    assert ranked["grads"].keys() == single_grads.keys()
    worst = max((ranked["grads"][n] - g).abs().max().item() for n, g in single_grads.items())
    assert worst < 1e-5, worst
    # The gradient is not trivially small: a 1/#ranks scaling (the official bug) would show.
    scale = max(g.abs().max().item() for g in single_grads.values())
    assert scale > 1e-3


def test_hard_negatives_are_drawn_from_every_rank(ranked):
    ranked = ranked[0]
    local = GLOBAL_BATCH // 2
    assert ranked["pulled_ok"]
    from_other_rank = (ranked["draws"] >= local).float().mean().item()  # rank 0's view: indices >= 4 are rank 1's
    assert 0.2 < from_other_rank < 0.9, from_other_rank


def test_keyed_hard_negatives_are_the_same_on_one_process_and_on_two_ranks(ranked):
    """Keyed by (seed, step, sample id), every row draws the negatives one process draws, even
    with the one process holding the batch in another order; the generator draws did not."""
    model, batch = make_model_and_batch()
    order = torch.tensor([5, 2, 7, 0, 3, 6, 1, 4])  # the same global batch, laid out otherwise
    _, _, itc = itc_loss_and_grads(model, {k: v[order] for k, v in batch.items()})
    single = keyed_negatives(itc, SAMPLE_IDS[order])
    two_ranks = {**ranked[0]["keyed"], **ranked[1]["keyed"]}
    assert two_ranks.keys() == single.keys()
    assert two_ranks == single
    draws = [pair for pairs in single.values() for pair in pairs]
    assert all(image != row and text != row for row, pairs in single.items() for image, text in pairs)
    assert len({image for image, _ in draws}) == GLOBAL_BATCH  # varied: every sample drawn at some step


def test_mlm_gradient_is_the_global_mean_over_masked_tokens_on_any_number_of_ranks(ranked):
    """7 masked tokens on rank 0, 2 on rank 1: a per-rank mean would weight rank 1's 3.5 times more."""
    single = mlm_grad(slice(0, GLOBAL_BATCH), world=1)
    assert torch.allclose(ranked[0]["mlm_grad"], single, atol=1e-7, rtol=0)
    assert single.abs().max() > 1e-3
