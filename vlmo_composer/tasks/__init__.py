"""Composer models, one per pre-training stage and fine-tune (registered by name)."""

from vlmo_composer.tasks.base import InitFrom, TaskConfig, VLMoTask
from vlmo_composer.tasks.text_mlm import TextMLMTask
from vlmo_composer.tasks.vision_mim import VisionMIMTask
from vlmo_composer.tasks.vl_pretrain import VLPretrainTask

__all__ = ["InitFrom", "TaskConfig", "TextMLMTask", "VLMoTask", "VLPretrainTask", "VisionMIMTask"]
