"""Safe weights on disk: ``model.safetensors`` + ``config.json`` in one folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Union

from safetensors.torch import load_file, save_file

from vlmo_composer.checkpoints.io import check_and_load
from vlmo_composer.model.config import VLMoConfig
from vlmo_composer.model.vlmo import VLMo

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def save_safetensors(model: VLMo, folder: Union[str, os.PathLike]) -> Path:
    """Write the weights and the :class:`VLMoConfig` that rebuilds the model."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt", "library": "vlmo_composer"})
    (folder / CONFIG_NAME).write_text(json.dumps(model.config.to_dict(), indent=2, sort_keys=True) + "\n")
    return folder


def load_safetensors(folder: Union[str, os.PathLike], **config_overrides) -> VLMo:
    """Rebuild a model saved by :func:`save_safetensors`; every key must match."""
    folder = Path(folder)
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        if not (folder / name).exists():
            raise FileNotFoundError(f"{folder / name} not found (expected a folder written by save_safetensors)")
    config = VLMoConfig.from_dict({**json.loads((folder / CONFIG_NAME).read_text()), **config_overrides})
    model = VLMo(config)
    state = load_file(str(folder / WEIGHTS_NAME))
    check_and_load(model, state, source=str(folder / WEIGHTS_NAME))
    return model

