"""VLMo (Mixture-of-Modality-Experts vision-language model) on Composer and Streaming."""

from vlmo_composer.checkpoints import (
    load_beit,
    load_official,
    load_safetensors,
    save_official,
    save_safetensors,
)
from vlmo_composer.model import VLMo, VLMoConfig

__version__ = "0.1.0"

__all__ = [
    "VLMo",
    "VLMoConfig",
    "load_beit",
    "load_official",
    "load_safetensors",
    "save_official",
    "save_safetensors",
]
