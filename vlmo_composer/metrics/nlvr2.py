"""NLVR2 accuracy and consistency, as the official script computes them.

lil-lab/nlvr ``nlvr2/eval/metrics.py``: accuracy is over examples;
consistency is the fraction of *sentences* whose every example is right. An
identifier is ``{split}-{set_id}-{pair_id}-{sentence_id}``, and the official
script groups examples by the identifier with ``pair_id`` blanked
(``dev-850-0-1`` -> ``dev-850--1``): one sentence written for an 8-image set
is paired with several image pairs of that set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from vlmo_composer.metrics.common import IdKeyedMetric, first_index_per_id


def nlvr2_sentence_key(identifier: str) -> str:
    """The consistency group of an example: its identifier with ``pair_id`` blanked."""
    parts = identifier.split("-")
    if len(parts) != 4 or not parts[0] or not all(p.isdigit() for p in parts[1:]):
        raise ValueError(
            f"NLVR2 identifier {identifier!r} is not "
            "'{split}-{set_id}-{pair_id}-{sentence_id}'"
        )
    parts[2] = ""
    return "-".join(parts)


def _string_id(text: str) -> int:
    """A stable signed 64-bit id for a string, so identifiers can be gathered as tensors."""
    return int.from_bytes(
        hashlib.blake2b(text.encode(), digest_size=8).digest(), "little", signed=True
    )


class NLVR2Accuracy(IdKeyedMetric):
    """Accuracy and consistency over distinct NLVR2 examples, correct across ranks.

    ``compute`` returns ``{"accuracy": ..., "consistency": ...}`` (float64
    tensors); an identifier seen twice (sampler padding) counts once.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_list_state("correct", torch.int64)
        self.add_list_state("example_ids", torch.int64)
        self.add_list_state("sentence_ids", torch.int64)

    def update(self, logits_or_preds: Tensor, labels: Any, identifiers: Sequence[str]) -> None:
        """``logits_or_preds``: ``[B, 2]`` logits or ``[B]`` 0/1 predictions; ``labels``: 0/1."""
        preds = logits_or_preds.detach()
        if preds.ndim == 2:
            preds = preds.argmax(dim=1)
        elif preds.ndim != 1 or preds.is_floating_point():
            raise ValueError(
                "expected [B, 2] logits or [B] integer predictions, "
                f"got {preds.dtype} {tuple(preds.shape)}"
            )
        labels = torch.as_tensor(labels, device=preds.device).reshape(-1)
        if isinstance(identifiers, str) or not len(preds) == len(labels) == len(identifiers):
            raise ValueError(
                f"got {len(preds)} predictions, {len(labels)} labels and "
                f"identifiers {identifiers!r:.200}"
            )
        self.append("correct", preds.long() == labels.long())
        self.append(
            "example_ids", torch.tensor([_string_id(i) for i in identifiers], dtype=torch.int64)
        )
        self.append(
            "sentence_ids",
            torch.tensor(
                [_string_id(nlvr2_sentence_key(i)) for i in identifiers], dtype=torch.int64
            ),
        )

    def compute(self) -> dict[str, Tensor]:
        example_ids = self.gathered("example_ids")
        if len(example_ids) == 0:
            raise ValueError("NLVR2Accuracy received no examples before compute()")
        keep = first_index_per_id(example_ids)
        correct = self.gathered("correct")[keep]
        _, sentence = torch.unique(self.gathered("sentence_ids")[keep], return_inverse=True)
        wrong_per_sentence = torch.zeros(
            int(sentence.max()) + 1, dtype=torch.int64, device=correct.device
        )
        wrong_per_sentence.scatter_add_(0, sentence, 1 - correct)
        return {
            "accuracy": correct.double().mean(),
            "consistency": (wrong_per_sentence == 0).double().mean(),
        }
