"""The ``README.md`` model card an export writes, so the folder is a Hub repository as it is.

YAML front matter the Hub reads (``library_name``, ``tags``, ``pipeline_tag``, ``license``
when known), then what is known of the weights: the architecture (from the model's own
config), and, when the export comes from a training run (:class:`RunSource`), the
resolved training config, the data (each stream with its ``conversion_report.json``
summary: samples written, records skipped and dropped by reason) and the last
evaluation metrics in the run's ``metrics.jsonl``. What is not known says ``unknown``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from vlmo_composer import stores
from vlmo_composer.data.provenance import data_provenance
from vlmo_composer.model import VLMoConfig

README_NAME = "README.md"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class RunSource:
    """The training run an export's weights came from (its YAML, overrides and checkpoint)."""

    yaml_path: str
    overrides: tuple[str, ...] = ()
    checkpoint: Optional[str] = None
    batch: Optional[int] = None  # the checkpoint's step (batches trained), when it was read


def heads(config: VLMoConfig) -> list[str]:
    found = [name for name, on in (("ITC", config.itc_head), ("VL-branch ITC", config.itc_vl_head),
                                   ("ITM", config.itm_head), ("MLM", config.mlm_head),
                                   ("NLVR2", config.nlvr2_head)) if on]
    return found + ([f"VQA ({config.vqa_num_labels} answers)"] if config.vqa_num_labels else [])


def run_facts(run: RunSource) -> dict[str, Any]:
    """``{config_yaml, data, metrics, checkpoint}`` of a training run, read from its files."""
    from omegaconf import OmegaConf

    from vlmo_composer.common.run_paths import latest_checkpoint, run_folder
    from vlmo_composer.training.config import load_config, to_dict

    cfg = load_config(run.yaml_path, list(run.overrides))
    values = to_dict(cfg)
    data = {"train": data_provenance(values["train_loader"]["dataset"])}
    for loader in values.get("eval_loaders") or []:
        data[f"eval: {loader['label']}"] = data_provenance(loader["dataset"])
    checkpoint = run.checkpoint
    metrics = None
    if cfg.save_folder:
        checkpoint = checkpoint or latest_checkpoint(cfg.save_folder, cfg.run_name)
        metrics = last_eval_metrics(f"{run_folder(cfg.save_folder, cfg.run_name)}/metrics.jsonl")
    return {"config_yaml": OmegaConf.to_yaml(values), "data": data, "metrics": metrics,
            "checkpoint": checkpoint, "batch": run.batch if checkpoint == run.checkpoint else None,
            "yaml_path": run.yaml_path, "overrides": list(run.overrides)}


def _step(batch: Optional[int]) -> str:
    return f" (batch {batch})" if batch is not None else " (step unknown)"


def last_eval_metrics(path: str) -> Optional[dict[str, Any]]:
    """The last evaluation round in a ``metrics.jsonl`` (keys ``metrics/<split>/...``), with its step;
    None when the file is not local or holds no evaluation."""
    if stores.has_scheme(path) or not os.path.isfile(path):
        return None
    last = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash
            values = {k: v for k, v in record.items() if k.startswith("metrics/") and not k.startswith("metrics/train")}
            if values:
                last = {"batch": record.get("batch"), "epoch": record.get("epoch"), "values": values}
    return last


def model_card(config: VLMoConfig, answers: Optional[Sequence[str]] = None, run: Optional[dict[str, Any]] = None,
               timm: bool = False) -> str:
    """The card's text; ``run`` is :func:`run_facts` of the training run, None when unknown."""
    tags = ["vlmo", "vision-language", "image-text-retrieval", "zero-shot-image-classification", "safetensors",
            *(["visual-question-answering"] if config.vqa_num_labels else []), *(["timm"] if timm else [])]
    front = ["---", "library_name: vlmo-composer", "tags:", *(f"- {t}" for t in tags),
             "pipeline_tag: zero-shot-image-classification", "---", ""]
    arch = [
        f"# VLMo ({config.name})", "",
        "A VLMo (Mixture-of-Modality-Experts) model exported by vlmo-composer: `model.safetensors` + `config.json` "
        "and the tokenizer files. Load it with", "",
        "```python", "from vlmo_composer import create_model_and_transforms, get_tokenizer", "",
        'model, preprocess_train, preprocess_val = create_model_and_transforms("hf-hub:ORG/NAME")',
        'tokenizer = get_tokenizer("hf-hub:ORG/NAME")', "```", "",
        "## Architecture", "",
        "| field | value |", "|---|---|",
        f"| size | {config.name} |",
        f"| layers | {config.num_layers} (VL-FFN from block {config.vl_ffn_start}) |",
        f"| hidden | {config.hidden_size} (FFN {config.ffn_size}) |",
        f"| attention heads | {config.num_heads} |",
        f"| image size | {config.image_size} px, patch {config.patch_size} |",
        f"| text length | {config.max_text_len} tokens (vocabulary {config.vocab_size}) |",
        f"| positions | {'relative (shared table)' if config.relative_position else 'absolute'} |",
        f"| task heads present | {', '.join(heads(config)) or 'none'} |",
        f"| answer vocabulary | {f'{len(answers)} answers (answer_vocab.json)' if answers else 'none'} |",
        "",
    ]
    return "\n".join(front + arch + _run_sections(run)) + "\n"


def _run_sections(run: Optional[dict[str, Any]]) -> list[str]:
    if run is None:
        return ["## Training", "", f"Training config: {UNKNOWN}.", "", "## Data", "", f"{UNKNOWN}.", "",
                "## Evaluation", "", f"{UNKNOWN}.", ""]
    overrides = " ".join(run["overrides"]) or "none"
    lines = ["## Training", "", f"From `{run['yaml_path']}` (overrides: {overrides}); checkpoint "
             f"`{run['checkpoint'] or UNKNOWN}`{_step(run.get('batch'))}. The resolved config:", "", "```yaml",
             run["config_yaml"].rstrip(),
             "```", "", "## Data", "",
             "Each stream as the run read it, with its `conversion_report.json` (written by data_prep next to the "
             "split's `index.json`) where it could be read.", "",
             "| loader | stream | location | split | samples written | skipped | dropped |",
             "|---|---|---|---|---|---|---|"]
    for loader, streams in run["data"].items():
        for s in streams:
            r = s["report"]
            if r is None:
                lines.append(f"| {loader} | {s['stream']} | `{s['location']}` | {UNKNOWN} | {UNKNOWN} | {UNKNOWN} "
                             f"| {UNKNOWN} |")
            else:
                lines.append(f"| {loader} | {s['stream']} | `{s['location']}` | {r['split'] or '-'} | "
                             f"{r['samples_written']} of {r['records']} records | {_reasons(r['skipped'])} | "
                             f"{_reasons(r['dropped'])} |")
    lines += ["", "## Evaluation", ""]
    metrics = run["metrics"]
    if metrics is None:
        lines += [f"{UNKNOWN} (no evaluation in the run's metrics.jsonl).", ""]
    else:
        lines += [f"The last evaluation in the run's `metrics.jsonl` (batch {metrics['batch']}):", "",
                  "| metric | value |", "|---|---|",
                  *(f"| {k} | {_number(v)} |" for k, v in sorted(metrics["values"].items())), ""]
    return lines


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items())) or "0"


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
