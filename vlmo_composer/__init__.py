"""VLMo (Mixture-of-Modality-Experts vision-language model) on Composer and Streaming."""

from vlmo_composer.checkpoints import (
    load_beit,
    load_official,
    load_safetensors,
    save_official,
    save_safetensors,
)
from vlmo_composer.inference import VLMoInference, create_model_and_transforms
from vlmo_composer.model import VLMo, VLMoConfig

__version__ = "0.1.0"

__all__ = [
    "VLMo",
    "VLMoConfig",
    "VLMoInference",
    "create_model_and_transforms",
    "load_beit",
    "load_official",
    "load_safetensors",
    "save_official",
    "save_safetensors",
]
