"""The evaluation command: ``python eval.py <config.yaml> [key=value ...] [options]``.

Evaluates weights — by default the run's own latest Composer checkpoint, else
``--weights PATH [--kind official|safetensors|composer]`` (local or ``s3://``;
the kinds of :mod:`vlmo_composer.checkpoints.sources`) — on the YAML's
``eval_loaders`` with the task's registered evaluator, and prints the paper-style
table; ``--output`` writes the numbers as JSON.
``python eval.py zeroshot ...`` is zero-shot classification and ``python eval.py
vqa-score ...`` the official VQA scoring of a results file (see ``--help`` there);
``--vqa-submission F --split test-dev`` writes the VQA server's results file.
Under ``composer -n N eval.py ...`` every task and option runs on all N ranks, each
reading its share of a split, with the numbers of one process
(:mod:`vlmo_composer.evaluation.ranks`); rank 0 prints and writes them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch
from composer.utils import dist

from vlmo_composer import stores
from vlmo_composer.checkpoints.hub import is_hub_name
from vlmo_composer.checkpoints.io import LoadReport
from vlmo_composer.checkpoints.sources import check_weight_set, fetch_source
from vlmo_composer.common.errors import ConfigError
from vlmo_composer.data.loaders import build_dataloader
from vlmo_composer.data.local_cache import cache_namespace
from vlmo_composer.data.provenance import data_provenance
from vlmo_composer.evaluation.evaluators import EvalRun, evaluator_for
from vlmo_composer.evaluation.ranks import join_ranks
from vlmo_composer.evaluation.vqa_submission import SubmissionError, find_split, write_split_submission
from vlmo_composer.evaluation.args import parse_args
from vlmo_composer.evaluation.weights import chosen_weights, default_checkpoint
from vlmo_composer.tasks.base import InitFrom
from vlmo_composer.training.builders import build_task, resolve_config
from vlmo_composer.training.config import TrainConfig, load_config
from vlmo_composer.training.dry_run import eval_summary
from vlmo_composer.training.run_checks import check_s3_credentials, s3_locations, short_error
from vlmo_composer.training.usage import config_problem


def load_weights(task, path: str, kind: str, weights: Optional[str] = None) -> tuple[str, LoadReport]:
    """Put the weights into ``task.model`` by the task's own rules; returns a description of the
    source (printed once, in the summary) and the load report.

    ``weights`` (``--weights-set``): a Composer checkpoint's EMA or raw set.
    """
    check_weight_set(kind, weights, "--weights-set")
    init = InitFrom(kind=kind, path=path, weights=weights)
    try:
        report = task.initialise(init, announce=False)
    except ValueError as err:  # unreadable file, another model size: the message names the path
        raise ConfigError(str(err).replace("init_from.path: ", "")) from None
    step = f" (batch {report.batch})" if report.batch is not None else ""  # a Composer checkpoint's step
    which = f"; {report.weights}" if report.weights else ""  # a run with EMA: which of its two sets
    return f"{kind} weights {path}{step}{which}" + ("" if str(report) == "exact match" else f" ({report})"), report


def describe_weights(path: str, kind: str) -> str:
    """What ``load_weights`` would read, for ``--dry-run`` (local files are checked)."""
    from vlmo_composer.checkpoints.pretrained import describe_source

    if described := describe_source(path):  # a pretrained name or https:// file: its URL and cache state
        return f"{kind} {described}"
    if is_hub_name(path):
        return f"{kind} {path} (Hugging Face Hub, through its cache)"
    found = "" if stores.has_scheme(path) else " (found)" if os.path.exists(path) else " (NOT FOUND yet)"
    return f"{kind} {path}{found}"


def evaluate(cfg: TrainConfig, weights_from: str, task, device: torch.device, rerank_k: int = 0) -> dict[str, Any]:
    """Every eval loader of ``cfg`` through the evaluator registered for the task's name.

    Each split's record gets its wall time (``wall_s``) next to its distinct ``samples``;
    ``provenance`` says per split where its data came from (each stream's conversion report
    summary: :func:`~vlmo_composer.data.provenance.data_provenance`).
    """
    results: dict[str, Any] = {"weights": weights_from,
                               "provenance": {c.label: data_provenance(c.dataset) for c in cfg.eval_loaders}}
    task.to(device).eval()
    batch = cfg.device_eval_batch_size or 32

    def loader_factory(loader_cfg, i: int):
        return build_dataloader(loader_cfg, batch, train=False, where=f"eval_loaders[{i}]",
                                cache_namespace=cache_namespace(cfg.run_name, f"eval-{loader_cfg.label}"))

    run = EvalRun(task, device, loader_factory, rerank_k)
    evaluator = evaluator_for(cfg.task.get("name", ""))
    for i, loader_cfg in enumerate(cfg.eval_loaders):
        start = time.perf_counter()
        record = evaluator(run, loader_cfg, i)
        results[loader_cfg.label] = {**record, "wall_s": round(time.perf_counter() - start, 3)}
    return results


REPORT_KEYS = ("weights", "world_size", "checkpoint", "load_s", "provenance")  # results' entries that are no split
TIMING_KEYS = ("samples", "wall_s", "seconds")


def format_table(results: dict[str, Any]) -> str:
    lines = [f"weights: {results['weights']}"]
    for label, record in results.items():
        if label in REPORT_KEYS:
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
                lines.append(f"re-ranking changed the top-1 of {record['reranked']['changed_top1']} queries "
                             f"(past the top {record['reranked']['k']} the dual-encoder order is kept)")
        else:
            numbers = ", ".join(f"{k} {v * 100:.2f}" for k, v in record.items()
                                if isinstance(v, float) and k not in TIMING_KEYS)
            lines.append(f"\n{label}: {numbers}")
    return "\n".join(lines)


def timing_lines(results: dict[str, Any]) -> str:
    """Per phase: loading the weights, then each split's time and samples/s; the rank count."""
    phases = [f"load weights {results['load_s']:.1f} s"]  # then each split's in results' order
    for label, record in results.items():
        if label not in REPORT_KEYS:
            rate = record["samples"] / record["wall_s"] if record["wall_s"] > 0 else float("inf")
            phases.append(f"{label} {record['wall_s']:.1f} s ({record['samples']} samples, {rate:.1f} samples/s)")
    world = results["world_size"]
    ranks = "1 rank" if world == 1 else f"{world} ranks (each read its share of every split; numbers of the whole)"
    return "time: " + "; ".join(phases) + f"\nevaluated on {ranks}"


def flat_summary(results: dict[str, Any]) -> dict[str, Any]:
    """The first retrieval split's numbers at the top level (``metrics.json``'s contract)."""
    for label, record in results.items():
        if isinstance(record, dict) and "tr_r1" in record:
            keys = ("tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10", "r_mean", "chance_tr_r1", "chance_ir_r1")
            return {**{k: record[k] for k in keys}, "split": label, **results}
    return results


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["zeroshot"]:
        from vlmo_composer.evaluation.zeroshot import main as zeroshot_main

        return zeroshot_main(argv[1:])
    if argv[:1] == ["vqa-score"]:
        from vlmo_composer.evaluation.vqa_score import main as vqa_score_main

        return vqa_score_main(argv[1:])
    if "--list-pretrained" in argv:
        from vlmo_composer.checkpoints.pretrained import pretrained_table

        print(pretrained_table())
        return 0
    args = parse_args(argv)
    problem = config_problem(args.config)
    if problem is not None:
        print(f"eval error: {problem}", file=sys.stderr)
        return 2
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        cfg = load_config(args.config, args.overrides)
        if not cfg.eval_loaders:
            raise ConfigError(f"{args.config} has no eval_loaders to evaluate on")
        if not args.dry_run:
            device = join_ranks(device)
        if args.dry_run:
            path, kind = chosen_weights(args, default_checkpoint(cfg))
            print(eval_summary(cfg, args.config, describe_weights(path, kind)))
            return 0
        resolved = resolve_config(cfg)
        path, kind = chosen_weights(args, default_checkpoint(cfg))
        check_s3_credentials([*((key, uri) for key, uri in s3_locations(cfg) if key.startswith("eval_loaders")),
                              ("weights", path)])  # what evaluation reads: not the training run's paths
        if args.vqa_submission:
            find_split(cfg, args.split)  # a wrong label fails before any weights are read
        named = path  # what --output records: the weights as named (s3://, a pretrained name), not a fetched copy
        if kind == "auto":
            path, kind = fetch_source(path)  # the kind is guessed from what arrived (s3:// fetched first)
        start = time.perf_counter()
        task = build_task(resolved.without_init().on_device("cpu"))
        weights, report = load_weights(task, path, kind, args.weights_set)
        load_s = time.perf_counter() - start
    except (ConfigError, FileNotFoundError, KeyError, ValueError, PermissionError) as err:
        print(f"eval error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # S3 access and unreadable files: one line, exit 2
        message = short_error(err)
        if message is None:
            raise
        print(f"eval error: {message}", file=sys.stderr)
        return 2
    if args.vqa_submission:
        try:
            start = time.perf_counter()
            written = write_split_submission(cfg, task, device, args.split, args.vqa_submission, args.allow_answers)
            predict_s = time.perf_counter() - start
        except SubmissionError as err:
            print(f"eval error: {err}", file=sys.stderr)
            return 2
        if dist.get_global_rank() == 0:
            print(f"weights: {weights}\n{args.split}: {written['questions']} answers written to {args.vqa_submission}")
            print(timing_lines({"load_s": load_s, "world_size": dist.get_world_size(),
                                args.split: {"samples": written["questions"], "wall_s": predict_s}}))
        return 0
    results = evaluate(cfg, weights, task, device, args.rerank_k)
    results.update(world_size=dist.get_world_size(), checkpoint=report.record(named, kind),
                   load_s=round(load_s, 3))
    if dist.get_global_rank() > 0:  # every rank computed the same numbers: rank 0 reports them
        return 0
    print(format_table(results))
    print(timing_lines(results))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(flat_summary(results), indent=2) + "\n")
        print(f"\nwrote {args.output}")
    return 0
