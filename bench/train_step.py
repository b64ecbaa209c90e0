"""Benchmark the stage-3 training step (ITC + VL-ITC + hard-negative ITM + MLM).

Times forward + backward + AdamW step on synthetic inputs already on the device
(the data pipeline has its own benchmark), for each combination of batch size and
torch.compile setting, and prints a table: step time, samples/s, peak memory, the
activation memory autograd saves for backward (device-independent, taken on the
first eager step), and MFU by the analytic FLOP count of ``vlmo_composer.model.flops``
(663 GFLOP per sample for base at 224 px / 40 tokens with every token's MLM logits;
we compute MLM logits only at masked tokens, and count what runs).

    python bench/train_step.py --size small --batch 32 --device cpu            # CPU, seconds
    python bench/train_step.py --size base --batch 64 128 --precision bf16 --compile off on --attention sdpa flex
    python bench/train_step.py --gates          # the device-independent gates (CPU, ~15-30 min here)

MFU is printed against the bf16 spec (989 TFLOP/s on H100/H200) and against the
~790 TFLOP/s a bf16 GEMM reaches there (``shared/GPU.md``). On CUDA the table says
which attention kernel ran (profiler kernel names).
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import time

import torch

from vlmo_composer.training.optim import build_adamw
from vlmo_composer.training.profiling import SavedActivations, synthetic_vl_batch
from vlmo_composer.tasks.vl_pretrain import VLPretrainConfig, VLPretrainTask

# Dense bf16 / fp32 peak TFLOP/s for MFU (published numbers, no sparsity).
PEAK_TFLOPS = {("h200", "bf16"): 989.0, ("h100", "bf16"): 989.0, ("a100", "bf16"): 312.0,
               ("h200", "fp32"): 67.0, ("h100", "fp32"): 67.0, ("a100", "fp32"): 19.5}
MEASURED_GEMM_TFLOPS = {("h200", "bf16"): 790.0}  # shared/GPU.md: a large bf16 matmul on one H200


def peak_flops(device: torch.device, precision: str, table: dict = PEAK_TFLOPS) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).lower()
    for (gpu, prec), tflops in table.items():
        if gpu in name and prec == precision:
            return tflops * 1e12
    return None


def attention_kernels(step, device: torch.device) -> str:
    """Names of the attention kernels one step launches (CUDA profiler)."""
    if device.type != "cuda":
        return "n/a"
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize(device)
    names = {e.key for e in prof.key_averages()}
    found = [kind for kind, marks in (("flash", ("flash",)), ("mem-eff", ("fmha", "efficient", "mem_eff")),
                                      ("cudnn", ("cudnn",)), ("flex", ("flex", "triton_tem")), ("math", ("softmax",)))
             if any(m in n.lower() for n in names for m in marks)]
    return "+".join(found) or "?"


def run(size: str, batch: int, precision: str, compile_model: bool, steps: int, warmup: int,
        device: torch.device, checkpointing: str, attention: str = "auto") -> dict:
    model = {"size": size, "attention": attention}
    if checkpointing != "none":
        model.update(activation_checkpointing=True, checkpoint_policy=checkpointing)
    task = VLPretrainTask(VLPretrainConfig(model=model)).to(device)
    task.train()
    optimizer = build_adamw([{"params": [p for p in task.parameters() if p.requires_grad]}], 1e-5, (0.9, 0.98), 1e-8)
    data = synthetic_vl_batch(task.config, batch, device)
    step_fn = torch.compile(task) if compile_model else task
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext())
    saved = SavedActivations(task.parameters())
    saved_gib = None

    def step(measure: bool = False) -> None:
        nonlocal saved_gib
        with autocast, (saved.hooks() if measure else contextlib.nullcontext()):
            loss = step_fn(data)["losses"]["total"]
        if measure:
            saved_gib = saved.gib  # before backward empties the checkpoint caches
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            if i == warmup:
                torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        step(measure=i == 0 and not compile_model)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    flops = task.flops_per_batch(data)
    peak, gemm = peak_flops(device, precision), peak_flops(device, precision, MEASURED_GEMM_TFLOPS)
    memory = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    kernels = attention_kernels(step, device)
    return {
        "size": size, "batch": batch, "precision": precision, "compile": compile_model,
        "attention": task.model.blocks[0].attn.kind if attention == "auto" else attention,
        "kernels": kernels, "checkpointing": checkpointing,
        "step_ms": step_s * 1e3, "samples_s": batch / step_s, "tflops": flops / step_s / 1e12,
        "mfu": None if peak is None else flops / step_s / peak,
        "mfu_gemm": None if gemm is None else flops / step_s / gemm, "peak_gib": memory,
        "saved_gib": saved_gib,
        "gflop_per_sample": flops / batch / 1e9,
    }


def _pct(value) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def print_table(rows: list[dict], device: torch.device) -> None:
    memory = "peak GiB" if device.type == "cuda" else "RSS GiB"
    print(f"\nstage-3 step on {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, "
          f"torch {torch.__version__}")
    header = (f"{'size':6}{'batch':>6}{'prec':>6}{'compile':>8}{'attn':>6}{'kernel':>9}{'ckpt':>10}{'step ms':>9}"
              f"{'samples/s':>10}{'MFU989':>8}{'MFU790':>8}{memory:>9}{'saved GiB':>10}{'GFLOP/s.':>9}")
    print(header)
    print("-" * len(header))
    for r in rows:
        saved = "n/a" if r["saved_gib"] is None else f"{r['saved_gib']:.2f}"
        print(f"{r['size']:6}{r['batch']:>6}{r['precision']:>6}{'on' if r['compile'] else 'off':>8}{r['attention']:>6}"
              f"{r['kernels']:>9}{r['checkpointing']:>10}{r['step_ms']:>9.1f}{r['samples_s']:>10.1f}"
              f"{_pct(r['mfu']):>8}{_pct(r['mfu_gemm']):>8}{r['peak_gib']:>9.2f}{saved:>10}{r['gflop_per_sample']:>9.1f}")


def run_gates(size: str) -> bool:
    """Every device-independent gate, then one table (measure, how, value, gate, pass)."""
    import step_gates as gates

    rows = [gates.gate_graph_breaks(size), gates.gate_host_syncs(size), gates.gate_host_syncs_distributed(size),
            *gates.gate_compiled(size), gates.gate_regional_compile(size),
            gates.gate_regional_compile(size, activation_checkpointing=True, checkpoint_policy="selective"),
            gates.gate_flex_parity(size)]
    for attention, checkpointing in (("sdpa", False), ("sdpa", True), ("flex", False), ("flex", True)):
        per_sample, ratio, seconds = gates.base_memory_and_flops(2, checkpointing=checkpointing, attention=attention)
        label = "selective checkpointing" if checkpointing else "no checkpointing"
        flop_text = "n/a" if ratio is None else f"{ratio:.3f}"
        print(f"  base, batch 2, bf16 autocast, {attention}, {label}: {per_sample:.3f} GiB/sample saved, "
              f"FLOPs executed/analytic {flop_text}, fwd+bwd {seconds:.1f} s (CPU, fake tensors)")
        if checkpointing and attention == "flex":  # the CUDA default path
            rows.append(("saved for backward, base, bf16 autocast",
                         "saved-tensor hooks, batch 2, selective ckpt, flex (CUDA default)",
                         f"{per_sample:.3f} GiB/sample", f"<= {gates.GIB_PER_SAMPLE_GATE}",
                         per_sample <= gates.GIB_PER_SAMPLE_GATE))
        if checkpointing and attention == "sdpa":
            rows.append(("FLOPs executed / analytic", "FlopCounterMode, base, fwd+bwd, selective ckpt",
                         f"{ratio:.3f}", "0.97-1.03", 0.97 <= ratio <= 1.03))
    print("\n| measure | how | value | gate | pass |\n|---|---|---|---|---|")
    for name, how, value, gate, passed in rows:
        print(f"| {name} | {how} | {value} | {gate} | {'yes' if passed else 'NO'} |")
    return all(r[-1] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", choices=["small", "base", "base_plus", "large"],
                        help="a named size with the BERT vocabulary (tiny has a toy one)")
    parser.add_argument("--batch", type=int, nargs="+", default=[16])
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--compile", nargs="+", choices=["off", "on"], default=["off"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--attention", nargs="+", choices=["auto", "sdpa", "flex"], default=["auto"])
    parser.add_argument("--checkpointing", choices=["none", "full", "selective"], default="none")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--gates", action="store_true", help="run the device-independent gates instead")
    args = parser.parse_args()
    if args.gates:
        raise SystemExit(0 if run_gates("tiny") else 1)
    device = torch.device(args.device)
    rows = []
    for batch in args.batch:
        for compiled in args.compile:
            for attention in args.attention:
                rows.append(run(args.size, batch, args.precision, compiled == "on", args.steps, args.warmup,
                                device, args.checkpointing, attention))
                print({k: v for k, v in rows[-1].items() if k in ("batch", "compile", "attention", "samples_s")}, flush=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    print_table(rows, device)


if __name__ == "__main__":
    main()
