"""Composer models, one per pre-training stage and fine-tune (registered by name)."""

from vlmo_composer.tasks.base import InitFrom, TaskConfig, VLMoTask
from vlmo_composer.tasks.nlvr2 import NLVR2Task
from vlmo_composer.tasks.retrieval import RetrievalTask
from vlmo_composer.tasks.text_mlm import TextMLMTask
from vlmo_composer.tasks.vision_mim import VisionMIMTask
from vlmo_composer.tasks.vl_pretrain import VLPretrainTask
from vlmo_composer.tasks.vqa import VQATask

__all__ = [
    "InitFrom",
    "NLVR2Task",
    "RetrievalTask",
    "TaskConfig",
    "TextMLMTask",
    "VLMoTask",
    "VLPretrainTask",
    "VQATask",
    "VisionMIMTask",
]
