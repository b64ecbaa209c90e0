"""Retrieval evaluation inside training (stage 3 and the retrieval fine-tune).

Lives with the tasks, which use it; ``evaluation/retrieval.py`` (eval.py's
retrieval with re-ranking) reads the same features from here, so tasks never
import the evaluation command.
"""

from __future__ import annotations

from typing import Any

import torch

from vlmo_composer.metrics import RetrievalRecall


def retrieval_batch_features(model, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Image and caption ITC embeddings of an all-captions batch, with their ids."""
    image_ids = batch["sample_index"]
    ids, mask, caption_mask = batch["input_ids"], batch["attention_mask"], batch["caption_mask"]
    num_captions = ids.shape[1]
    keep = caption_mask.reshape(-1)
    caption_ids = (image_ids[:, None] * num_captions + torch.arange(num_captions, device=ids.device)).reshape(-1)
    text_image_ids = image_ids[:, None].expand(-1, num_captions).reshape(-1)
    return {
        "image_feats": model.encode_image(batch["pixel_values"]).float(),
        "image_ids": image_ids,
        "text_feats": model.encode_text(ids.flatten(0, 1)[keep], mask.flatten(0, 1)[keep]).float(),
        "text_ids": caption_ids[keep],
        "text_image_ids": text_image_ids[keep],
    }


class RetrievalEvalMixin:
    """Adds TR@K / IR@K evaluation to a task whose ``self.model`` is a VLMo."""

    def eval_forward(self, batch: dict[str, Any], outputs: Any = None) -> dict[str, torch.Tensor]:
        return outputs if outputs is not None else retrieval_batch_features(self.model, batch)

    def get_metrics(self, is_train: bool = False) -> dict:
        return {} if is_train else {"RetrievalRecall": RetrievalRecall(with_chance=True)}

    def update_metric(self, batch: Any, outputs: dict, metric) -> None:
        metric.update(**outputs)
