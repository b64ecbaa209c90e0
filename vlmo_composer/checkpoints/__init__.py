"""Converters: official VLMo, BEiT (timm and official), safetensors, and the timm BEiT export."""

from vlmo_composer.checkpoints.beit import load_beit
from vlmo_composer.checkpoints.io import LoadReport, read_state_dict
from vlmo_composer.checkpoints.official import load_official, official_state_dict, save_official
from vlmo_composer.checkpoints.safetensors_io import load_safetensors, save_safetensors
from vlmo_composer.checkpoints.timm_export import save_timm_beit, vlmo_to_timm_beit

__all__ = [
    "LoadReport",
    "load_beit",
    "load_official",
    "load_safetensors",
    "official_state_dict",
    "read_state_dict",
    "save_official",
    "save_safetensors",
    "save_timm_beit",
    "vlmo_to_timm_beit",
]
