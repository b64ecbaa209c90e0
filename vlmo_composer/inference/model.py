"""VLMo behind open_clip's model interface: an ``nn.Module`` with ``encode_image`` /
``encode_text`` / ``logit_scale``, plus the fusion (VL-FFN) encoder and its heads.

Inputs are batches, as in open_clip: pixels ``[N, 3, S, S]`` from ``preprocess_val``
(or ``preprocess_train``) and token ids ``[N, T]`` from :func:`~vlmo_composer.get_tokenizer`.
The attention mask VLMo needs is derived from the ids (``ids != pad_token_id``), so a
tokenizer call is all a caller passes, as with CLIP; ids of a vocabulary whose padding
id also occurs in text can bring their own ``attention_mask``.

Methods take ``(image, text)`` in open_clip's order. Nothing here batches, moves
devices or turns gradients off: the module trains and evaluates like any other
(:class:`~vlmo_composer.inference.VLMoInference` does that for whole galleries).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from vlmo_composer.model import VLMo, VLMoConfig

PAD_TOKEN_ID = 0  # BERT's [PAD], the bundled tokenizer's


class VLMoCLIP(nn.Module):
    """A :class:`VLMo` with open_clip's encode methods (the network is ``.vlmo``; its
    ``state_dict`` is what checkpoints and exports hold).

    Args:
        vlmo: the network.
        pad_token_id: the tokenizer's padding id, from which text masks are derived.
        answers: VQA answer strings in label order (the head's label names), if known.
    """

    def __init__(self, vlmo: VLMo, pad_token_id: int = PAD_TOKEN_ID, answers: Optional[Sequence[str]] = None) -> None:
        super().__init__()
        self.vlmo = vlmo
        self.pad_token_id = pad_token_id
        self.answers = None if answers is None else list(answers)
        if self.answers is not None and len(self.answers) != vlmo.config.vqa_num_labels:
            raise ValueError(
                f"the answer vocabulary has {len(self.answers)} answers but the model's VQA head has "
                f"{vlmo.config.vqa_num_labels} outputs"
            )

    @property
    def config(self) -> VLMoConfig:
        return self.vlmo.config

    @property
    def logit_scale(self) -> nn.Parameter:
        """The ITC temperature as a log scale (open_clip's ``logit_scale``; similarity * ``exp()``)."""
        if not self.config.itc_head:
            raise ValueError(f"this model ({self.config.name}) has no ITC head, hence no logit_scale")
        return self.vlmo.logit_scale

    def text_mask(self, text: torch.Tensor) -> torch.Tensor:
        """``[N, T]`` 1 for real tokens: everything but padding (the tokenizer's own mask for BERT)."""
        return (text != self.pad_token_id).long()

    def _mask(self, text: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        return self.text_mask(text) if attention_mask is None else attention_mask

    # ------------------------------------------------------------------ dual encoder
    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """ITC image embeddings ``[N, D]`` (V-FFN path), the retrieval features."""
        return self.vlmo.encode_image(image, normalize=normalize)

    def encode_text(
        self, text: torch.Tensor, normalize: bool = False, attention_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """ITC text embeddings ``[N, D]`` (L-FFN path) of token ids; mask from the padding unless given."""
        return self.vlmo.encode_text(text, self._mask(text, attention_mask), normalize=normalize)

    def forward(
        self, image: Optional[torch.Tensor] = None, text: Optional[torch.Tensor] = None
    ) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor], torch.Tensor]:
        """open_clip's ``CLIP.forward``: normalised image and text features and ``logit_scale.exp()``."""
        image_features = None if image is None else self.encode_image(image, normalize=True)
        text_features = None if text is None else self.encode_text(text, normalize=True)
        return image_features, text_features, self.logit_scale.exp()

    # ------------------------------------------------------------------ fusion encoder (VL-FFN)
    def encode_fused(
        self, image: torch.Tensor, text: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
        image_type_id: int = 1,
    ) -> torch.Tensor:
        """Pooled fusion-encoder state ``[N, D]`` of pair ``(image[i], text[i])``: what the ITM, VQA
        and NLVR2 heads read."""
        return self.vlmo.fuse(text, self._mask(text, attention_mask), image, image_type_id).pooled

    def itm_score(
        self, image: torch.Tensor, text: torch.Tensor, attention_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """ITM "match" logit ``[N]`` of each pair, the re-ranking score (``VLMo.match_scores``)."""
        return self.vlmo.itm_logits(self.encode_fused(image, text, attention_mask))[:, 1]

    def vqa_logits(
        self, image: torch.Tensor, text: torch.Tensor, attention_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """VQA head logits ``[N, num_labels]`` (``answers`` names the labels)."""
        return self.vlmo.vqa_logits(self.encode_fused(image, text, attention_mask))

    def nlvr2_logits(
        self, left: torch.Tensor, right: torch.Tensor, text: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """NLVR2 (False, True) logits ``[N, 2]`` of each sentence about its image pair."""
        return self.vlmo.nlvr2_pair_logits(text, self._mask(text, attention_mask), left, right)

