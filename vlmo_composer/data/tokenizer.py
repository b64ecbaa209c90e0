"""The BERT uncased tokenizer VLMo uses, built offline from the bundled vocabulary.

``get_tokenizer()`` never touches the network: the vocabulary ships in
``vlmo_composer/assets``. A hub name or a local directory may be given instead
(then transformers loads it as usual, honouring ``HF_HUB_OFFLINE``).

``encode_text`` returns what the model and whole-word masking need:
``input_ids`` and ``attention_mask`` padded to ``max_length``, and
``word_start`` (True where a token begins a word: WordPiece marks the
continuation of a word with a ``##`` prefix, the rule transformers'
``DataCollatorForWholeWordMask`` uses).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import torch
from torch import Tensor
from transformers import AutoTokenizer, BertTokenizerFast, PreTrainedTokenizerBase

BUNDLED_VOCAB = "bert-base-uncased-vocab.txt"
VOCAB_SIZE = 30522
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 100, 101, 102, 103


def bundled_vocab_path() -> str:
    return str(resources.files("vlmo_composer") / "assets" / BUNDLED_VOCAB)


def get_tokenizer(name_or_path: str | None = None) -> PreTrainedTokenizerBase:
    """The default (``None``) is ``bert-base-uncased`` from the bundled vocabulary, lower-casing on.

    Cached: every dataset in a process shares one instance per name.
    """
    return _load_tokenizer(name_or_path)


@lru_cache(maxsize=8)
def _load_tokenizer(name_or_path: str | None) -> PreTrainedTokenizerBase:
    if name_or_path is None:
        return BertTokenizerFast(vocab_file=bundled_vocab_path(), do_lower_case=True, model_max_length=512)
    return AutoTokenizer.from_pretrained(name_or_path)


@lru_cache(maxsize=8)
def continuation_table(tokenizer: PreTrainedTokenizerBase) -> Tensor:
    """``[len(tokenizer)]`` bool: True for ids whose token continues a word (``##`` prefix).

    Tokenizers without ``##`` pieces get all False: every token is its own word,
    as in transformers' collator.
    """
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return torch.tensor([t is not None and t.startswith("##") for t in tokens], dtype=torch.bool)


def encode_text(
    text: str | list[str],
    max_length: int,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> dict[str, Tensor]:
    """Tokenise, truncate and pad to ``max_length``.

    Returns ``input_ids`` and ``attention_mask`` (long) and ``word_start``
    (bool), each ``[max_length]`` for one string or ``[B, max_length]`` for a
    list.
    """
    tokenizer = tokenizer if tokenizer is not None else get_tokenizer()
    enc = tokenizer(
        text,
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
        return_token_type_ids=False,
    )
    input_ids = enc["input_ids"].long()
    attention_mask = enc["attention_mask"].long()
    if isinstance(text, str):
        input_ids, attention_mask = input_ids[0], attention_mask[0]
    word_start = ~continuation_table(tokenizer)[input_ids]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "word_start": word_start}
