"""NLVR2 accuracy and consistency against the official script's definition."""

from __future__ import annotations

import random

import pytest
import torch

from vlmo_composer.metrics import NLVR2Accuracy, nlvr2_sentence_key


def official_metrics(identifiers: list[str], correct: list[bool]) -> dict[str, float]:
    """lil-lab/nlvr nlvr2/eval/metrics.py restated: group by identifier with field 2 blanked."""
    consistent: dict[str, bool] = {}
    for identifier, ok in zip(identifiers, correct, strict=True):
        fields = identifier.split("-")
        fields[2] = ""
        key = "-".join(fields)
        consistent[key] = consistent.get(key, True) and ok
    return {
        "accuracy": sum(correct) / len(correct),
        "consistency": sum(consistent.values()) / len(consistent),
    }


def test_sentence_key():
    assert nlvr2_sentence_key("dev-850-0-1") == "dev-850--1"
    assert nlvr2_sentence_key("test1-0-3-0") == "test1-0--0"
    for bad in ("dev-850-0", "dev-850-x-1", "-850-0-1", "dev-850-0-1.png"):
        with pytest.raises(ValueError, match="is not '{split}-{set_id}-{pair_id}-{sentence_id}'"):
            nlvr2_sentence_key(bad)


def test_hand_worked():
    identifiers = ["dev-1-0-0", "dev-1-1-0", "dev-1-2-0", "dev-1-0-1", "dev-2-3-0", "dev-2-2-0"]
    labels = torch.tensor([1, 0, 1, 1, 0, 0])
    preds = torch.tensor([1, 0, 0, 1, 0, 0])
    # Sentence dev-1--0 has a wrong pair, dev-1--1 and dev-2--0 are all right: 2 of 3 consistent.
    metric = NLVR2Accuracy()
    metric.update(preds, labels, identifiers)
    got = metric.compute()
    assert got["accuracy"].item() == 5 / 6
    assert got["consistency"].item() == 2 / 3


def test_random_equals_official_and_logits_equal_preds():
    rng = random.Random(1)
    identifiers = [
        f"{split}-{s}-{p}-{k}"
        for split in ("dev", "test1")
        for s in range(6)
        for p in range(4)
        for k in range(2)
        if rng.random() < 0.7
    ]
    labels = [rng.randint(0, 1) for _ in identifiers]
    preds = [label if rng.random() < 0.8 else 1 - label for label in labels]
    expected = official_metrics(identifiers, [p == y for p, y in zip(preds, labels, strict=True)])
    assert 0 < expected["consistency"] < expected["accuracy"] < 1

    logits = torch.randn(len(preds), 2)
    logits[torch.arange(len(preds)), torch.tensor(preds)] += 10.0
    from_logits, from_preds = NLVR2Accuracy(), NLVR2Accuracy()
    half = len(preds) // 2
    from_logits.update(logits[:half], torch.tensor(labels[:half]), identifiers[:half])
    from_logits.update(logits[half:], labels[half:], identifiers[half:])
    from_preds.update(torch.tensor(preds), labels, identifiers)
    # A repeated example (sampler padding) counts once.
    from_preds.update(torch.tensor(preds[:3]), labels[:3], identifiers[:3])
    for metric in (from_logits, from_preds):
        got = {k: v.item() for k, v in metric.compute().items()}
        assert got == pytest.approx(expected, abs=1e-12)


def test_bad_inputs():
    with pytest.raises(ValueError, match="integer predictions"):
        NLVR2Accuracy().update(torch.tensor([0.2, 0.9]), [0, 1], ["dev-1-0-0", "dev-1-1-0"])
    with pytest.raises(ValueError, match="2 predictions, 2 labels and identifiers"):
        NLVR2Accuracy().update(torch.tensor([0, 1]), [0, 1], ["dev-1-0-0"])
    with pytest.raises(ValueError, match="'dev-1-0'"):
        NLVR2Accuracy().update(torch.tensor([0]), [0], ["dev-1-0"])
