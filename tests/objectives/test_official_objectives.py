"""Stage-3 objective parity with the official compute_itc / compute_itm_hardneg / compute_mlm."""

from __future__ import annotations

import pytest
import torch

from vlmo_composer import load_official
from vlmo_composer.objectives import HardNegatives
from vlmo_composer.tasks.vl_pretrain import vl_pretrain_losses


def official_batch(official_tiny):
    inp = official_tiny["inputs"]
    return {
        "pixel_values": inp["image"],
        "input_ids": inp["text_ids"],
        "attention_mask": inp["text_masks"],
        "mlm_input_ids": inp["text_ids_mlm"],
        "mlm_labels": inp["text_labels_mlm"],
    }


def run(official_tiny):
    model = load_official(official_tiny["state_dict"], "tiny").eval()
    out = official_tiny["outputs"]
    negatives = HardNegatives(out["obj.itm_neg_image_idx"], out["obj.itm_neg_text_idx"])
    losses = vl_pretrain_losses(model, official_batch(official_tiny), mlm_weight=0.25, negatives=negatives)
    return model, losses


def test_losses_match_the_official_objectives(official_tiny):
    out = official_tiny["outputs"]
    _, losses = run(official_tiny)
    assert abs(losses["itc"].item() - out["obj.itc_loss"].item()) < 1e-5
    assert abs(losses["itm"].item() - out["obj.itm_loss"].item()) < 1e-5
    assert abs(0.25 * losses["mlm"].item() - out["obj.mlm_loss"].item()) < 1e-5  # official logs it weighted
    assert abs(losses["total"].item() - out["obj.total_loss"].item()) < 1e-5


def test_gradients_match_the_official_total_loss(official_tiny):
    model, losses = run(official_tiny)
    losses["total"].backward()
    grads = official_tiny["grads"]
    ours = {n: p.grad if p.grad is not None else torch.zeros_like(p) for n, p in model.named_parameters()}
    assert set(grads) <= set(ours)
    # Parameters the official objective never touches have no gradient there; none here either.
    untouched = [n for n in ours if grads.get(n) is None]
    assert untouched == ["text_embeddings.position_embeddings.weight"]
    assert all(ours[n].abs().max() == 0 for n in untouched)
    worst = max(((g - ours[n]).abs().max().item(), n) for n, g in grads.items() if g is not None)
    assert worst[0] < 1e-5, worst


def test_hard_negatives_follow_the_similarities():
    """With one overwhelmingly similar wrong pair per row, that pair is always drawn."""
    from vlmo_composer.objectives import sample_hard_negatives

    logits = torch.full((4, 4), -50.0)
    logits.fill_diagonal_(100.0)  # positives dominate but must be excluded
    wrong = torch.tensor([2, 3, 0, 1])
    logits[torch.arange(4), wrong] = 10.0
    for _ in range(5):
        neg = sample_hard_negatives(logits, logits.clone(), torch.arange(4))
        assert torch.equal(neg.text_for_image, wrong) and torch.equal(neg.image_for_text, wrong)


def test_a_uniform_share_of_negatives_spreads_over_the_other_pairs():
    """itm_uniform_negatives (an option for short from-scratch runs): that share of each row's mass is uniform
    over the non-positive pairs, the rest follows the similarities; the positive is never drawn."""
    from vlmo_composer.objectives.itm import negative_weights
    from vlmo_composer.tasks.vl_pretrain import VLPretrainConfig

    logits = torch.full((4, 4), -50.0)
    logits.fill_diagonal_(100.0)
    wrong = torch.tensor([2, 3, 0, 1])
    logits[torch.arange(4), wrong] = 10.0  # all of the similarity mass goes to `wrong`
    weights = negative_weights(logits, torch.arange(4), uniform_mix=0.75)
    expected = torch.full((4, 4), 0.25)  # 0.75 spread over three other pairs
    expected.fill_diagonal_(0.0)
    expected[torch.arange(4), wrong] += 0.25
    assert torch.allclose(weights, expected, atol=1e-6), weights
    draws = torch.multinomial(weights, 4000, replacement=True)
    assert not (draws == torch.arange(4)[:, None]).any()
    assert 0.45 < (draws == wrong[:, None]).float().mean() < 0.55  # 0.25 + 0.75 / 3
    with pytest.raises(ValueError, match="itm_uniform_negatives must be in"):
        VLPretrainConfig(itm_uniform_negatives=1.5)


def test_trimming_text_padding_does_not_change_the_losses():
    """trim_text_padding cuts the batch to its longest caption: same losses, less compute."""
    from vlmo_composer.tasks.vl_pretrain import VLPretrainConfig, VLPretrainTask

    model = dict(size="small", hidden_size=64, num_layers=2, num_heads=2, ffn_size=128, vl_ffn_start=1,
                 image_size=32, max_text_len=16, drop_path_rate=0.0, text_embed_dropout=0.0)
    torch.manual_seed(0)
    plain = VLPretrainTask(VLPretrainConfig(model=model)).eval()
    trimmed = VLPretrainTask(VLPretrainConfig(model=model, trim_text_padding=True)).eval()
    trimmed.load_state_dict(plain.state_dict())
    ids = torch.randint(1000, 2000, (4, 16))
    mask = torch.zeros(4, 16, dtype=torch.long)
    for row, length in enumerate((5, 9, 7, 3)):
        mask[row, :length] = 1
    labels = torch.full_like(ids, -100)
    labels[:, 2] = ids[:, 2]
    batch = {"pixel_values": torch.randn(4, 3, 32, 32), "input_ids": ids * mask, "attention_mask": mask,
             "mlm_input_ids": ids * mask, "mlm_labels": labels}
    assert trimmed.prepare(batch)["input_ids"].shape == (4, 9)
    torch.manual_seed(3)
    a = plain(batch)["losses"]
    torch.manual_seed(3)
    b = trimmed(batch)["losses"]
    for key in ("itc", "itm", "mlm", "total"):
        assert abs(a[key].item() - b[key].item()) < 1e-5, key
