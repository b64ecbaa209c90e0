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

# The YAML's top-level keys (TrainConfig's fields), one line each. Static, so --help needs
# no import; tests/training/test_cli_errors.py compares it with TrainConfig.
TOP_LEVEL_KEYS = (
    ("task", "what to train: {name: <task>, model: {size, image_size, max_text_len, ...}, init_from}"),
    ("train_loader", "{name: <loader>, dataset: {remote/local/streams, ...}, num_workers, ...}"),
    ("optimizer", "{name: <optimizer>, lr, ...}"),
    ("scheduler", "{name: <scheduler>, t_warmup, ...}"),
    ("max_duration", "how long: 3ep, 1000ba, 1e6sp"),
    ("global_train_batch_size", "samples per step over all ranks"),
    ("variables", "values the rest of the YAML reads as ${variables.name}"),
    ("code_paths", "Python files to import first (they may register their own components)"),
    ("run_name", "the run's name; the run folder is save_folder with {run_name} filled in"),
    ("seed", "global seed (data order, augmentation, init)"),
    ("eval_loaders", "[{label, name: <loader>, dataset, metric_names}, ...] evaluated during training"),
    ("predict_loaders", "unlabelled splits only eval.py --vqa-submission predicts on"),
    ("eval_interval", "how often to evaluate: 1ep, 500ba"),
    ("eval_subset_num_batches", "batches per evaluation (-1: all)"),
    ("device_eval_batch_size", "evaluation batch per device (default: the training one)"),
    ("device_train_microbatch_size", "microbatch per device (gradient accumulation)"),
    ("precision", "fp32, amp_bf16, amp_fp16 (default: amp_bf16 on GPU, fp32 on CPU)"),
    ("device", "gpu, cpu, mps, ... (default: Composer's, gpu when there is one)"),
    ("algorithms", "{<algorithm>: {kwargs}, ...}"),
    ("parallelism_config", "Composer's, e.g. {fsdp: {...}} (GPU only)"),
    ("compile_config", "torch.compile options (Composer's)"),
    ("callbacks", "{<callback>: {kwargs}, ...}"),
    ("loggers", "{<logger>: {kwargs}, ...}"),
    ("progress_bar", "a readable progress line on the console"),
    ("log_to_console", "metrics on the console every console_log_interval"),
    ("console_log_interval", "how often the console logs: 1ba, 100ba"),
    ("python_log_level", "level of the vlmo_composer logger (info, debug, ...)"),
    ("save_folder", "where checkpoints go (a path or s3://...), may hold {run_name}"),
    ("save_interval", "how often to checkpoint: 1ep, 1000ba"),
    ("save_filename", "checkpoint file name pattern"),
    ("save_num_checkpoints_to_keep", "local checkpoints kept (-1: all)"),
    ("save_overwrite", "replace existing checkpoints of the same name"),
    ("save_weights_only", "checkpoints without optimizer and data state"),
    ("autoresume", "continue from the run folder's latest checkpoint when there is one"),
    ("load_path", "a checkpoint to start from (full state, or weights with load_weights_only)"),
    ("load_weights_only", "take only the model weights from load_path"),
    ("load_strict_model_weights", "every key of load_path must match the model"),
    ("load_ignore_keys", "state keys to skip when loading"),
    ("dist_timeout", "seconds the ranks wait for one another"),
    ("object_store", "S3 retries and timeouts: {max_attempts, read_timeout, ...}"),
    ("preemption_grace_seconds", "on SIGTERM, checkpoint and exit within this many seconds"),
)

# What a YAML may name in each section, one line each. Static for the same reason; the
# test compares it with the registries filled when the training stack is imported.
REGISTERED = {
    "tasks (task.name)": (
        ("vision_mim", "stage 1: masked image modelling on images (BEiT)"),
        ("text_mlm", "stage 2: masked language modelling on text, vision side frozen"),
        ("vl_pretrain", "stage 3: ITC + ITM + MLM on image-text pairs"),
        ("retrieval", "fine-tune: image-text retrieval (dual encoder, ITC)"),
        ("vqa", "fine-tune: VQA v2 (fusion encoder, answer classifier)"),
        ("nlvr2", "fine-tune: NLVR2 (two images, one sentence, true/false)"),
    ),
    "loaders (train_loader.name, eval_loaders[i].name)": (
        ("image_text", "image with captions: one caption per visit, or all of them for retrieval"),
        ("text", "text-only documents, whole-word-masked"),
        ("image", "images, optionally labelled and with BEiT block masks"),
        ("vqa", "image, question and soft answer scores"),
        ("nlvr2", "two images, a sentence and a label"),
    ),
    "optimizers (optimizer.name)": (
        ("adamw", "torch AdamW with decay exclusions and per-parameter lr multipliers"),
    ),
    "schedulers (scheduler.name)": (
        ("linear_decay_with_warmup", "linear warm-up, then linear decay"),
        ("cosine_decay_with_warmup", "linear warm-up, then cosine decay"),
        ("constant_with_warmup", "linear warm-up, then constant"),
    ),
    "algorithms (algorithms.<name>)": (
        ("gradient_clipping", "Composer's gradient clipping"),
        ("ema", "Composer's exponential moving average of the weights"),
    ),
    "callbacks (callbacks.<name>)": (
        ("speed_monitor", "throughput (Composer)"),
        ("lr_monitor", "learning rates (Composer)"),
        ("memory_monitor", "GPU memory (Composer)"),
        ("runtime_estimator", "time left (Composer)"),
        ("optimizer_monitor", "gradient and parameter norms (Composer)"),
        ("sample_order_logger", "the sample indices of every step, to check data order"),
    ),
    "loggers (loggers.<name>)": (
        ("file", "Composer's text file logger"),
        ("in_memory", "Composer's in-memory logger"),
        ("tensorboard", "TensorBoard (pip install 'vlmo-composer[tensorboard]')"),
        ("wandb", "Weights & Biases (pip install 'vlmo-composer[wandb]')"),
        ("mlflow", "MLflow (pip install 'vlmo-composer[mlflow]')"),
    ),
}


def listing(rows: tuple[tuple[str, str], ...], indent: str = "  ") -> str:
    width = max(len(name) for name, _ in rows) + 2
    return "\n".join(f"{indent}{name:<{width}}{line}" for name, line in rows)


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

top-level keys (the first six are required):
{listing(TOP_LEVEL_KEYS)}

registered names (a code_paths file may register more):
""" + "\n".join(f"  {section}:\n{listing(rows, '    ')}" for section, rows in REGISTERED.items()) + """

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
