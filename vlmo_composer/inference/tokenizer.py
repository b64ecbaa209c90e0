"""open_clip's tokenizer call for VLMo: ``tokenizer(texts) -> [N, context_length]`` token ids.

Ids only, as open_clip's tokenizers return: :class:`~vlmo_composer.inference.VLMoCLIP`
derives the attention mask from ``pad_token_id``. The ids are those training feeds
(:func:`vlmo_composer.data.tokenizer.encode_text`: BERT uncased, truncated and padded
to the model's ``max_text_len``), so the mask derived from them is the tokenizer's own.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from transformers import PreTrainedTokenizerBase

from vlmo_composer.data.tokenizer import encode_text


class VLMoTokenizer:
    """Texts -> padded token ids; ``tokenizer`` is the Hugging Face tokenizer underneath."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, context_length: int) -> None:
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no padding token: VLMo's text masks are derived from it")
        self.tokenizer = tokenizer
        self.context_length = context_length

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    def __call__(self, texts: Union[str, Sequence[str]], context_length: Optional[int] = None) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a string or a non-empty list of strings")
        return encode_text(texts, context_length or self.context_length, self.tokenizer)["input_ids"]

    def __repr__(self) -> str:
        return f"VLMoTokenizer({type(self.tokenizer).__name__}, context_length={self.context_length})"
