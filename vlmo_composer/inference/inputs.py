"""What the task helpers accept: images as PIL images, paths, bytes or pixel tensors; texts as
strings or already tokenised ids, checked against the model before anything runs.

A string is never guessed to be a text or a path: each argument says which it is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Union

import torch
from PIL import Image
from transformers import PreTrainedTokenizerBase

from vlmo_composer.data.images import decode_image
from vlmo_composer.data.tokenizer import encode_text
from vlmo_composer.data.transforms import ImageTransform
from vlmo_composer.model import VLMoConfig

ImageInput = Union[torch.Tensor, Image.Image, str, os.PathLike, bytes]
Images = Union[torch.Tensor, Image.Image, str, os.PathLike, bytes, Sequence[ImageInput]]
Texts = Union[str, Sequence[str], Mapping[str, torch.Tensor]]


def tokenize(texts: Texts, config: VLMoConfig, tokenizer: PreTrainedTokenizerBase) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` ``[N, max_text_len]`` (padded as in training).

    A mapping with ``input_ids`` (and optionally ``attention_mask``) is taken as
    already tokenised, for models whose vocabulary is not the tokenizer's.
    """
    if isinstance(texts, Mapping):
        if "input_ids" not in texts:
            raise ValueError("tokenised texts need 'input_ids' (and optionally 'attention_mask')")
        ids = torch.as_tensor(texts["input_ids"]).long()
        mask = torch.as_tensor(texts.get("attention_mask", torch.ones_like(ids))).long()
        if ids.ndim != 2 or mask.shape != ids.shape:
            raise ValueError(
                f"input_ids must be [N, T] with an attention_mask of the same shape; got "
                f"{tuple(ids.shape)} and {tuple(mask.shape)}"
            )
        if ids.shape[1] > config.max_text_len:
            raise ValueError(f"texts of {ids.shape[1]} tokens exceed max_text_len={config.max_text_len}")
    else:
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ValueError("no texts given")
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"texts must be strings; items {bad[:10]} are not")
        enc = encode_text(texts, config.max_text_len, tokenizer)
        ids, mask = enc["input_ids"], enc["attention_mask"]
    if len(ids) == 0:
        raise ValueError("no texts given")
    outside = ids[(ids < 0) | (ids >= config.vocab_size)]
    if len(outside):
        raise ValueError(
            f"token id {int(outside[0])} is outside the model's vocabulary of {config.vocab_size}: "
            "the tokenizer does not match this model (pass token ids that fit it)"
        )
    return {"input_ids": ids, "attention_mask": mask}


def image_list(images: Images, config: VLMoConfig) -> Union[torch.Tensor, list]:
    """A ``[N, 3, S, S]`` pixel tensor, or a list of images preprocessed lazily by :func:`pixel_tensor`."""
    if torch.is_tensor(images):
        pixels = images.unsqueeze(0) if images.ndim == 3 else images
        check_pixels(pixels, config, "images")
        return pixels
    items = [images] if isinstance(images, (Image.Image, str, os.PathLike, bytes)) else list(images)
    if not items:
        raise ValueError("no images given")
    return items


def check_pixels(pixels: torch.Tensor, config: VLMoConfig, what: str) -> None:
    size = config.image_size
    if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (config.in_chans, size, size):
        raise ValueError(
            f"{what}: pixel tensors must be [N, {config.in_chans}, {size}, {size}] (use preprocess_val); "
            f"got {tuple(pixels.shape)}"
        )


def pixel_tensor(item: ImageInput, index: int, preprocess: ImageTransform, config: VLMoConfig) -> torch.Tensor:
    """Image ``index`` of a list as ``[3, S, S]`` pixels (decoded and preprocessed unless already pixels)."""
    if torch.is_tensor(item):
        check_pixels(item.unsqueeze(0), config, f"image {index}")
        return item
    if isinstance(item, (str, os.PathLike)):
        try:
            image = decode_image(Path(item).read_bytes())
        except (OSError, ValueError) as err:
            raise ValueError(f"image {index} ({item}): {err}") from err
    elif isinstance(item, bytes):
        image = decode_image(item)
    elif isinstance(item, Image.Image):
        image = item.convert("RGB")
    else:
        raise TypeError(
            f"image {index} is a {type(item).__name__}; expected a PIL image, a path, bytes or a pixel tensor"
        )
    return preprocess(image)
