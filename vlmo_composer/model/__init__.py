"""The MoME Transformer: config, layers, relative positions, heads, the VLMo model."""

from vlmo_composer.model.config import NAMED_CONFIGS, VLMoConfig
from vlmo_composer.model.vlmo import FusionOutput, UnimodalOutput, VLMo

__all__ = ["NAMED_CONFIGS", "VLMoConfig", "VLMo", "FusionOutput", "UnimodalOutput"]
