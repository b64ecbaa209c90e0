"""Write a 5-step copy of yamls/pretrain/vl_large.yaml for one GPU on local synthetic data.

Keeps the recipe's model, precision, optimizer and parallelism_config (the sharding
under test); replaces data, checkpointing and duration so it runs offline.

    python bench/gpu_large_recipe.py DATA_DIR OUT.yaml [BATCH]
"""

from __future__ import annotations

import sys

from omegaconf import OmegaConf as om


def main(data: str, out: str, batch: int = 16) -> None:
    cfg = om.load("yamls/pretrain/vl_large.yaml")
    dataset = cfg.train_loader.dataset
    del dataset["streams"]
    dataset.local = f"{data}/image_text/train"
    dataset.predownload = None
    cfg.train_loader.num_workers = 4
    for key in ("eval_loaders", "load_path", "save_folder", "eval_interval"):
        cfg.pop(key, None)
    cfg.autoresume = False
    cfg.run_name = "gpu-large-5"
    cfg.max_duration = "5ba"
    cfg.global_train_batch_size = batch
    cfg.device_train_microbatch_size = batch
    cfg.callbacks = {"speed_monitor": {"window_size": 1}, "memory_monitor": {}}
    cfg.console_log_interval = "1ba"
    om.save(cfg, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:]))
