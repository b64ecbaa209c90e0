"""VLMo (Mixture-of-Modality-Experts vision-language model) on Composer and Streaming."""

from vlmo_composer._lazy_exports import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "VLMo": "vlmo_composer.model",
    "VLMoConfig": "vlmo_composer.model",
    "VLMoCLIP": "vlmo_composer.inference",
    "VLMoInference": "vlmo_composer.inference",
    "create_model": "vlmo_composer.inference",
    "create_model_and_transforms": "vlmo_composer.inference",
    "get_tokenizer": "vlmo_composer.inference",
    "list_pretrained": "vlmo_composer.checkpoints.pretrained",
    "load_beit": "vlmo_composer.checkpoints",
    "load_official": "vlmo_composer.checkpoints",
    "load_safetensors": "vlmo_composer.checkpoints",
    "register_pretrained": "vlmo_composer.checkpoints.pretrained",
    "save_official": "vlmo_composer.checkpoints",
    "save_safetensors": "vlmo_composer.checkpoints",
}
__all__ = sorted(_EXPORTS)
# Imported on first use: light submodules (data.schema, read by data_prep) load without torch.
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
