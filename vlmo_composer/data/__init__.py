"""Data: the MDS schema contract, streaming datasets, transforms, tokenizer, masking."""

from vlmo_composer.data.datasets import ImageDataset, ImageTextDataset, NLVR2Dataset, TextDataset, VQADataset
from vlmo_composer.data.streams import build_streams
from vlmo_composer.data.tokenizer import get_tokenizer
from vlmo_composer.data.transforms import build_image_transform

__all__ = [
    "ImageDataset",
    "ImageTextDataset",
    "NLVR2Dataset",
    "TextDataset",
    "VQADataset",
    "build_image_transform",
    "build_streams",
    "get_tokenizer",
]
