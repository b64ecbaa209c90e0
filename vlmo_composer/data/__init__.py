"""Data: the MDS schema contract, streaming datasets, transforms, tokenizer, masking."""

from vlmo_composer._lazy_exports import lazy_exports

_EXPORTS = {
    "ImageDataset": "vlmo_composer.data.datasets",
    "ImageTextDataset": "vlmo_composer.data.datasets",
    "NLVR2Dataset": "vlmo_composer.data.datasets",
    "TextDataset": "vlmo_composer.data.datasets",
    "VQADataset": "vlmo_composer.data.datasets",
    "build_image_transform": "vlmo_composer.data.transforms",
    "build_streams": "vlmo_composer.data.streams",
    "get_tokenizer": "vlmo_composer.data.tokenizer",
}
__all__ = sorted(_EXPORTS)
# Imported on first use: the schema (read by data_prep) loads without torch.
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
