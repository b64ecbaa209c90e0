"""Evaluators registered per task name: what ``eval.py`` runs on each eval loader.

A task without its own evaluator gets :func:`task_metrics` (its Composer eval
metrics; on several ranks each reads its share and the metrics gather and count
every sample once, by id). Register one for a new task without forking::

    from vlmo_composer.evaluation.evaluators import evaluators
    evaluators.register("my_task", my_evaluator)  # (EvalRun, LoaderConfig, label) -> dict
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from vlmo_composer.evaluation.ranks import distinct_count
from vlmo_composer.evaluation.retrieval import evaluate_retrieval, retrieval_record
from vlmo_composer.registry import Registry

evaluators: Registry = Registry("evaluator")


@dataclass
class EvalRun:
    """Everything an evaluator may need besides its loader."""

    task: Any  # the ComposerModel (its ``model`` is the VLMo)
    device: torch.device
    loader_factory: Callable[[Any, int], Any]  # (loader config, index) -> a fresh loader
    rerank_k: int = 0


def evaluator_for(task_name: str) -> Callable[..., dict[str, Any]]:
    return evaluators.get(task_name) if task_name in evaluators else task_metrics


@torch.no_grad()
def run_task_metrics(task, loader, device: torch.device, collect=None) -> dict[str, Any]:
    """Any task's own Composer metrics (``collect`` sees every batch).

    On several ranks the metrics' ``compute`` gathers every rank's samples and drops
    the ones the sampler repeated (:mod:`vlmo_composer.metrics.common`).
    """
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


def task_metrics(run: EvalRun, loader_cfg, index: int) -> dict[str, Any]:
    """The task's metrics, and how many distinct samples they saw (all ranks together)."""
    seen: list[torch.Tensor] = []
    values = run_task_metrics(run.task, run.loader_factory(loader_cfg, index), run.device,
                              collect=lambda batch, _: seen.append(batch["sample_index"].cpu()))
    return {**values, "samples": distinct_count(torch.cat(seen) if seen else torch.empty(0, dtype=torch.long))}


@evaluators.register("vl_pretrain")
@evaluators.register("retrieval")
def retrieval(run: EvalRun, loader_cfg, index: int) -> dict[str, Any]:
    """Dual-encoder recall, and ITM re-ranked recall when ``rerank_k`` > 0."""
    result = evaluate_retrieval(run.task.model, lambda: run.loader_factory(loader_cfg, index), run.device, run.rerank_k)
    return {**retrieval_record(result), "samples": result.samples}
