"""``train.py``'s command line, answered before torch and Composer are imported.

``--help``, a missing argument and a YAML that does not exist need none of the
training stack, so ``train.py`` (and :func:`vlmo_composer.training.train.main`)
answer them here in a fraction of a second instead of after ~10 s of imports.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

USAGE = "usage: composer train.py <config.yaml> [key.path=value ...] [--dry-run]"

HELP = f"""{USAGE}

Train the task a YAML describes (model, data, optimizer, schedule, checkpoints) with
Composer's Trainer; `composer -n N train.py ...` runs N ranks on this node, `python
train.py ...` one process.

arguments:
  config.yaml      the run: yamls/quickstart.yaml, yamls/pretrain/*.yaml, yamls/finetune/*.yaml
  key.path=value   override a value, e.g. optimizer.lr=1e-4 global_train_batch_size=256
                   eval_loaders.0.dataset.remote=s3://bucket/coco/val (values are YAML: x=[1,2],
                   x=null); ~key.path removes a key or a list entry
  --dry-run        check the config, read every stream's index.json, build the model on the
                   meta device and print sizes, sample counts, steps, FLOPs and checkpoints;
                   train nothing
  -h, --help       show this message

The YAML is checked strictly: an unknown key fails with its path and the valid keys.
Examples:
  composer train.py yamls/quickstart.yaml
  composer -n 8 train.py yamls/pretrain/vl_base.yaml optimizer.lr=1e-4 --dry-run"""


def config_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be a config file, or None (checked before anything heavy is imported)."""
    if not os.path.exists(path):
        return f"{path} does not exist"
    if not os.path.isfile(path):
        return f"{path} is not a file"
    return None


def early_answer(argv: list[str]) -> Optional[int]:
    """The exit code when ``argv`` needs no training stack (help, no config, a config that is not
    there), after printing the answer; None when the command should go on."""
    args = [a for a in argv if a != "--dry-run"]
    if "-h" in args or "--help" in args:
        print(HELP)
        return 0
    if not args:
        print(USAGE, file=sys.stderr)
        return 2
    problem = config_problem(args[0])
    if problem is not None:
        print(f"config error: {problem}", file=sys.stderr)
        return 2
    return None
