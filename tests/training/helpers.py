"""Small training configs for tests: the same TrainConfig a YAML produces."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from vlmo_composer.training.config import TrainConfig, from_dict

# A few-layer VLMo that trains in seconds on a CPU.
SMALL_MODEL = dict(size="small", hidden_size=64, num_layers=2, num_heads=2, ffn_size=128, vl_ffn_start=1,
                   image_size=64, max_text_len=32, drop_path_rate=0.0)


def merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def cpu_run_config(save_folder: Path, values: dict, **extra: Any) -> TrainConfig:
    """``values`` (then ``extra`` overrides) as a quiet fp32 CPU run checkpointing to ``save_folder``."""
    run = {
        "device": "cpu",
        "precision": "fp32",
        "progress_bar": False,
        "save_folder": str(save_folder),
        "save_overwrite": True,
        "python_log_level": None,
    }
    return from_dict(TrainConfig, merge(merge(run, values), extra))


def stage_config(stage: str, data: Path, tmp: Path, **extra: Any) -> TrainConfig:
    """A TrainConfig for one of the three stages on the synthetic data."""
    answer_vocab = str(data / "vqa/answer_vocab.json")
    loaders = {
        "vision_mim": dict(name="image", dataset=dict(local=str(data / "images/train"), image_size=64,
                                                      randaugment=False, mim_num_patches=6, mim_min_patches=2)),
        "text_mlm": dict(name="text", dataset=dict(local=str(data / "text/train"), max_text_len=48)),
        "vl_pretrain": dict(name="image_text", dataset=dict(local=str(data / "image_text/train"), image_size=64,
                                                             max_text_len=32, randaugment=False, hflip=False)),
        "retrieval": dict(name="image_text", dataset=dict(local=str(data / "image_text/train"), image_size=64,
                                                           max_text_len=32, randaugment=False, hflip=False, mlm_prob=0.0)),
        "vqa": dict(name="vqa", dataset=dict(local=str(data / "vqa/train"), image_size=64, max_text_len=32,
                                             randaugment=False, hflip=False, num_labels=len(_answers(answer_vocab)))),
        "nlvr2": dict(name="nlvr2", dataset=dict(local=str(data / "nlvr2/train"), image_size=64, max_text_len=32,
                                                 randaugment=False, hflip=False)),
    }
    model = dict(SMALL_MODEL)
    if stage in ("vision_mim", "text_mlm"):
        del model["vl_ffn_start"]  # stages 1 and 2 build no VL-FFN by default
    if stage == "text_mlm":
        model["max_text_len"] = 48
    loader = dict(loaders[stage], num_workers=0)
    task = {"name": stage, "model": model}
    if stage == "vqa":
        task["answer_vocab"] = answer_vocab
    values = {
        "run_name": f"test-{stage}",
        "seed": 7,
        "task": task,
        "train_loader": loader,
        "optimizer": {"name": "adamw", "lr": 1e-3},
        "scheduler": {"name": "linear_decay_with_warmup", "t_warmup": "1ba"},
        "max_duration": "3ba",
        "global_train_batch_size": 8,
        "loggers": {"in_memory": {}},
        "save_interval": "3ba",
    }
    return cpu_run_config(tmp / stage, values, **extra)


def _answers(path: str) -> list[str]:
    from vlmo_composer.data.vqa_answers import answer_vocab_from_json

    with open(path) as fh:
        return answer_vocab_from_json(fh.read())


def in_memory_logger(trainer):
    from composer.loggers import InMemoryLogger

    return next(d for d in trainer.logger.destinations if isinstance(d, InMemoryLogger))
