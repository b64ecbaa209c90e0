"""The evaluation command: ``python eval.py <config.yaml> [key=value ...] [options]``.

Evaluates a checkpoint — ours (Composer, local or ``s3://``), an official VLMo
file, or an exported safetensors folder — on the YAML's ``eval_loaders`` and
prints the paper-style table; ``--output`` writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

import torch

from vlmo_composer.builders import build_task, resolve_config
from vlmo_composer.config import ConfigError, TrainConfig, load_config
from vlmo_composer.data.loaders import build_dataloader
from vlmo_composer.data.local_cache import cache_namespace
from vlmo_composer.metrics import write_vqa_submission
from vlmo_composer.retrieval import RetrievalResult, evaluate_retrieval
from vlmo_composer.tasks.base import InitFrom
from vlmo_composer.tasks.retrieval_eval import RetrievalEvalMixin
from vlmo_composer.tasks.vqa import VQATask


def default_checkpoint(cfg: TrainConfig) -> Optional[str]:
    """The newest checkpoint Composer wrote for this run (``latest-rank0.pt`` in save_folder)."""
    if not cfg.save_folder:
        return None
    folder = cfg.save_folder.replace("{run_name}", cfg.run_name or "")
    return f"{folder.rstrip('/')}/latest-rank0.pt"


def load_weights(task, checkpoint: Optional[str], official: Optional[str], exported: Optional[str]) -> str:
    """Put the chosen weights into ``task.model``; returns a description of the source."""
    if not (checkpoint or official or exported):
        raise ConfigError("no weights to evaluate: pass --checkpoint, --official or --exported (or set save_folder)")
    kind = "official" if official else "safetensors" if exported else "composer"
    init = InitFrom(kind=kind, path=official or exported or checkpoint)
    report = task.initialise(init)  # the task's own rules for which heads may be absent
    return f"{kind} weights {init.path}" + ("" if str(report) == "exact match" else f" ({report})")


def evaluate(
    cfg: TrainConfig, weights_from: str, task, device: torch.device, rerank_k: int = 0,
    vqa_submission: Optional[str] = None,
) -> dict[str, Any]:
    results: dict[str, Any] = {"weights": weights_from}
    task.to(device).eval()
    for i, loader_cfg in enumerate(cfg.eval_loaders):
        batch = cfg.device_eval_batch_size or 32

        def loader_factory(loader_cfg=loader_cfg, i=i):
            return build_dataloader(loader_cfg, batch, train=False, where=f"eval_loaders[{i}]",
                                    cache_namespace=cache_namespace(cfg.run_name, f"eval-{loader_cfg.label}"))

        if isinstance(task, RetrievalEvalMixin):
            result = evaluate_retrieval(task.model, loader_factory, device, rerank_k)
            results[loader_cfg.label] = retrieval_record(result)
        elif isinstance(task, VQATask) and vqa_submission:
            predictions: dict[int, str] = {}

            def collect(batch, outputs):
                answers = task.predict_answers(outputs["logits"])
                predictions.update(zip(batch["question_id"].tolist(), answers))

            results[loader_cfg.label] = run_task_metrics(task, loader_factory(), device, collect)
            path = vqa_submission.replace("{label}", loader_cfg.label)
            write_vqa_submission(path, list(predictions), list(predictions.values()))
            results[loader_cfg.label]["submission"] = path
        else:
            results[loader_cfg.label] = run_task_metrics(task, loader_factory(), device)
    return results


@torch.no_grad()
def run_task_metrics(task, loader, device: torch.device, collect=None) -> dict[str, Any]:
    """Any task's own Composer metrics, computed in one process (``collect`` sees every batch)."""
    metrics = task.get_metrics(is_train=False)
    for batch in loader:
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        outputs = task.eval_forward(batch)
        for metric in metrics.values():
            task.update_metric(batch, outputs, metric.to(device))
        if collect is not None:
            collect(batch, outputs)
    values: dict[str, float] = {}
    for name, metric in metrics.items():
        value = metric.compute()
        if isinstance(value, dict):
            values.update({k: float(v) for k, v in value.items()})
        else:
            values[name] = float(value)
    return values


def retrieval_record(result: RetrievalResult) -> dict[str, Any]:
    record = {**result.dual, **result.chance, "seconds": round(result.dual_seconds, 2)}
    if result.reranked is not None:
        record["reranked"] = {**result.reranked, "k": result.rerank_k, "seconds": round(result.rerank_seconds, 2),
                              "changed_top1": result.changed_top1}
    return record


def format_table(results: dict[str, Any]) -> str:
    lines = [f"weights: {results['weights']}"]
    for label, record in results.items():
        if label == "weights":
            continue
        if "tr_r1" in record:
            lines.append(f"\n{label}: image-text retrieval (% recall)")
            lines.append(f"{'':14}{'TR@1':>7}{'TR@5':>7}{'TR@10':>7}{'IR@1':>7}{'IR@5':>7}{'IR@10':>7}{'mean':>7}{'time s':>8}")
            rows = [("dual encoder", record, record["seconds"])]
            if "reranked" in record:
                rows.append((f"+ ITM top-{record['reranked']['k']}", record["reranked"], record["reranked"]["seconds"]))
            for name, r, seconds in rows:
                values = [r[k] * 100 for k in ("tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10", "r_mean")]
                lines.append(f"{name:14}" + "".join(f"{v:7.2f}" for v in values) + f"{seconds:8.1f}")
            lines.append(f"{'chance':14}{record['chance_tr_r1'] * 100:7.2f}{'':21}{record['chance_ir_r1'] * 100:7.2f}")
            if "reranked" in record:
                lines.append(f"re-ranking changed the top-1 of {record['reranked']['changed_top1']} queries")
        else:
            numbers = ", ".join(f"{k} {v * 100:.2f}" for k, v in record.items() if isinstance(v, float))
            lines.append(f"\n{label}: {numbers}")
            if "submission" in record:
                lines.append(f"submission file: {record['submission']}")
    return "\n".join(lines)


def flat_summary(results: dict[str, Any]) -> dict[str, Any]:
    """The first retrieval split's numbers at the top level (``metrics.json``'s contract)."""
    for label, record in results.items():
        if isinstance(record, dict) and "tr_r1" in record:
            keys = ("tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10", "r_mean", "chance_tr_r1", "chance_ir_r1")
            return {**{k: record[k] for k in keys}, "split": label, **results}
    return results


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="the YAML whose task and eval_loaders to use")
    parser.add_argument("overrides", nargs="*", help="dotted key.path=value overrides")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="a Composer checkpoint (default: latest in save_folder)")
    source.add_argument("--official", help="an official VLMo checkpoint file")
    source.add_argument("--exported", help="a folder written by export / save_safetensors")
    parser.add_argument("--rerank-k", type=int, default=0, help="ITM re-rank each query's top-k (retrieval)")
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument("--vqa-submission", help="VQA: write [{question_id, answer}] here ({label} = split)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    return parser.parse_intermixed_args(argv)  # overrides may follow the options (README: ... --rerank-k 16 $T)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        cfg = load_config(args.config, args.overrides)
        if not cfg.eval_loaders:
            raise ConfigError(f"{args.config} has no eval_loaders to evaluate on")
        task = build_task(resolve_config(cfg).without_init().on_device("cpu"))
        weights = load_weights(task, args.checkpoint or (None if args.official or args.exported else default_checkpoint(cfg)),
                               args.official, args.exported)
    except (ConfigError, FileNotFoundError, KeyError) as err:
        print(f"eval error: {err}", file=sys.stderr)
        return 2
    results = evaluate(cfg, weights, task, device, args.rerank_k, args.vqa_submission)
    print(format_table(results))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(flat_summary(results), indent=2) + "\n")
        print(f"\nwrote {args.output}")
    return 0
