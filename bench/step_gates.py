"""Device-independent gates of the stage-3 training step (run by ``train_step.py --gates``).

Each gate returns ``(name, how, value, gate, passed)``; the numbers hold on any device
(CPU here), so they are checked where no GPU is lent.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from vlmo_composer.training.profiling import HostSyncCounter, SavedActivations, compiled_graphs, graph_breaks, synthetic_vl_batch
from vlmo_composer.tasks.vl_pretrain import VLPretrainConfig, VLPretrainTask

GIB_PER_SAMPLE_GATE = 0.32


def make_task(size: str, seed: int = 0, **model) -> VLPretrainTask:
    torch.manual_seed(seed)
    task = VLPretrainTask(VLPretrainConfig(model={"size": size, **model}))
    task.train()
    return task


def train_step(task, step_fn, data, optimizer=None) -> torch.Tensor:
    """forward + backward (+ optimizer) of one step; the loss detached."""
    loss = step_fn(data)["losses"]["total"]
    loss.backward()
    if optimizer is not None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    task.flops_per_batch(data)  # what SpeedMonitor calls every step
    return loss.detach()


def gate_graph_breaks(size: str = "tiny"):
    task = make_task(size)
    count, reasons = graph_breaks(task, synthetic_vl_batch(task.config, 4))
    for reason in reasons:
        print("  graph break:", reason.splitlines()[0])
    return ("graph breaks, stage-3 forward + losses", "torch._dynamo.explain", count, "0", count == 0)


def count_syncs(task, data, optimizer) -> HostSyncCounter:
    """Syncs of step 2's forward, losses, backward and FLOP count (the first step may check
    batch sizes once). The optimizer is left out: torch's CPU AdamW reads its CPU step
    counter, not a device value; fused AdamW on CUDA keeps it on the device."""
    train_step(task, task, data, optimizer)
    with HostSyncCounter() as counter:
        train_step(task, task, data)
    optimizer.step()
    return counter


def gate_host_syncs(size: str = "tiny"):
    task = make_task(size)
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-5)
    counter = count_syncs(task, synthetic_vl_batch(task.config, 4), optimizer)
    print("  host syncs (world 1):", dict(counter.counts) or "none")
    return ("host syncs per step, world size 1", "dispatch-mode counter, step 2", counter.total, "0", counter.total == 0)


def _syncs_on_rank(rank: int, world: int, size: str) -> int:
    task = make_task(size)
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-5)
    return count_syncs(task, synthetic_vl_batch(task.config, 2, seed=rank), optimizer).total


def gate_host_syncs_distributed(size: str = "tiny"):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    from distributed import run_distributed

    counts = run_distributed(_syncs_on_rank, world=2, args=(size,), timeout_s=600)
    return ("host syncs per step, world size 2 (gloo)", "same counter, every rank", max(counts), "0", max(counts) == 0)


def gate_compiled(size: str = "tiny", steps: int = 3):
    """fullgraph inductor compile: graphs per step, and its losses against eager (same RNG draws)."""
    import torch._inductor.config as inductor_config

    inductor_config.fallback_random = True  # eager's random draws, so the losses are comparable
    # Drop path and dropout off: their many draws may run in another order in the compiled graph;
    # ITM's negative sampling (two draws) stays, as in training.
    deterministic = dict(drop_path_rate=0.0, text_embed_dropout=0.0)
    data = synthetic_vl_batch(make_task(size).config, 4)
    losses, graphs = {}, []
    for compiled in (False, True):
        torch._dynamo.reset()
        task = make_task(size, **deterministic)
        step_fn = torch.compile(task, fullgraph=True) if compiled else task
        before = compiled_graphs()  # dynamo's counter is per process
        optimizer = torch.optim.AdamW(task.parameters(), lr=1e-4)
        losses[compiled] = []
        for i in range(steps):
            torch.manual_seed(100 + i)
            losses[compiled].append(train_step(task, step_fn, data, optimizer).item())
            if compiled:
                graphs.append(compiled_graphs() - before)
    diff = max(abs(a - b) / abs(b) for a, b in zip(losses[True], losses[False]))
    print(f"  eager losses {losses[False]}\n  compiled losses {losses[True]}\n  graphs after each step {graphs}")
    flat = all(g == graphs[0] for g in graphs)
    return [
        ("compiled graphs after each of 3 steps", "dynamo unique_graphs", "/".join(map(str, graphs)), "flat", flat),
        ("compiled (inductor, CPU) vs eager losses", f"max rel. diff, {steps} steps, {size}", f"{diff:.1e}", "<= 1e-4",
         diff <= 1e-4),
    ]


def gate_regional_compile(size: str = "tiny", **model):
    """Every block compiled, none left to eager: graph count flat and no recompile-limit fallback
    (``model`` adds config, e.g. selective checkpointing, whose path is compiled per block too)."""
    torch._dynamo.reset()
    task = make_task(size, compile_blocks=True, **model)
    data = synthetic_vl_batch(task.config, 4)
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-4)
    graphs = []
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):  # a block left to eager raises
        for i in range(2):
            train_step(task, task, data, optimizer)
            graphs.append(compiled_graphs())
    how = "graphs after steps 1/2, limit hit raises" + (f", {model}" if model else "")
    return ("regional (per-block) compile, no block eager", how,
            f"{graphs[0]}/{graphs[1]}", "flat", graphs[0] == graphs[1] and graphs[0] > 0)


def base_memory_and_flops(batch: int = 2, checkpointing: bool = True, precision: str = "bf16",
                          attention: str = "sdpa"):
    """Saved-for-backward GiB/sample and FLOPs executed/analytic at base, one step under
    ``FakeTensorMode`` (shapes and dtypes without compute: seconds, no memory; equal to a
    real run's count, checked at small size). ``attention="flex"`` is what CUDA runs by
    default (eager here: the same saved tensors as the compiled kernel, q/k/v views,
    output and log-sum-exp); torch 2.7's ``FlopCounterMode`` cannot count its
    higher-order op, so its FLOP ratio is ``None``. On CPU, ``sdpa`` with a mask is the
    math path, which saves fp32 scores no CUDA kernel saves."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    torch._dynamo.reset()  # eager flex traces its score_mod with dynamo: start from a clean cache
    model = {"attention": attention}
    if checkpointing:
        model.update(activation_checkpointing=True, checkpoint_policy="selective")
    task = make_task("base", **model)
    data = synthetic_vl_batch(task.config, batch)
    analytic = task.flops_per_batch(data)
    saved = SavedActivations(task.parameters())
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    flops = FlopCounterMode(display=False) if attention == "sdpa" else contextlib.nullcontext()
    start = time.perf_counter()
    with FakeTensorMode(allow_non_fake_inputs=True) as mode, flops:
        data = {k: mode.from_tensor(v) for k, v in data.items()}
        with autocast, saved.hooks():
            loss = task(data)["losses"]["total"]
        per_sample = saved.gib / batch  # before backward empties the checkpoint caches
        loss.backward()
    ratio = flops.get_total_flops() / analytic if attention == "sdpa" else None
    return per_sample, ratio, time.perf_counter() - start


def gate_flex_parity(size: str = "tiny"):
    """fp32: FlexAttention (eager) against SDPA, outputs and every gradient of one step."""
    results = []
    data = synthetic_vl_batch(make_task(size).config, 4)
    for kind in ("sdpa", "flex"):
        task = make_task(size, attention=kind, drop_path_rate=0.0, text_embed_dropout=0.0)
        with torch.no_grad():
            task.model.relative_position_bias_table.normal_(0, 0.5)  # a bias far from zero
        torch.manual_seed(7)
        loss = task(data)["losses"]["total"]
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in task.named_parameters() if p.grad is not None}))
    (l0, g0), (l1, g1) = results
    diff = max([(l0 - l1).abs().item()] + [(g0[n] - g1[n]).abs().max().item() for n in g0])
    return ("FlexAttention vs SDPA, fp32, loss + all grads", f"eager on CPU, {size}, max abs diff",
            f"{diff:.1e}", "<= 1e-5", diff <= 1e-5 and g0.keys() == g1.keys())
