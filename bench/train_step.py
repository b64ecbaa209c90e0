"""Benchmark the stage-3 training step (ITC + VL-ITC + hard-negative ITM + MLM).

Times forward + backward + AdamW step on synthetic inputs already on the device
(the data pipeline has its own benchmark), for each combination of batch size and
torch.compile setting, and prints a table: step time, samples/s, peak memory, the
activation memory autograd saves for backward (device-independent, taken on the
first eager step), and MFU by the analytic FLOP count of ``vlmo_composer.model.flops``
(663 GFLOP per sample for base at 224 px / 40 tokens with every token's MLM logits;
we compute MLM logits only at masked tokens, and count what runs).

    python bench/train_step.py --size small --batch 32 --device cpu            # CPU, seconds
    python bench/train_step.py --size base --batch 64 128 --precision bf16     # one GPU
    python bench/train_step.py --size large --batch 32 --precision bf16 --compile off on
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import time

import torch

from vlmo_composer.tasks.vl_pretrain import VLPretrainConfig, VLPretrainTask

# Dense bf16 / fp32 peak TFLOP/s for MFU (published numbers, no sparsity).
PEAK_TFLOPS = {("h200", "bf16"): 989.0, ("h100", "bf16"): 989.0, ("a100", "bf16"): 312.0,
               ("h200", "fp32"): 67.0, ("h100", "fp32"): 67.0, ("a100", "fp32"): 19.5}


def synthetic_batch(config, batch: int, device: torch.device, mlm_prob: float = 0.15) -> dict:
    gen = torch.Generator().manual_seed(0)
    text_len = config.max_text_len
    ids = torch.randint(1000, config.vocab_size, (batch, text_len), generator=gen)
    ids[:, 0] = 101
    mask = torch.ones(batch, text_len, dtype=torch.long)
    lengths = torch.randint(text_len // 2, text_len + 1, (batch,), generator=gen)
    mask[torch.arange(text_len)[None, :] >= lengths[:, None]] = 0
    masked = (torch.rand(batch, text_len, generator=gen) < mlm_prob) & mask.bool()
    masked[:, 0] = False
    labels = torch.where(masked, ids, torch.full_like(ids, -100))
    return {
        "pixel_values": torch.randn(batch, 3, config.image_size, config.image_size, generator=gen).to(device),
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "mlm_input_ids": torch.where(masked, torch.full_like(ids, 103), ids).to(device),
        "mlm_labels": labels.to(device),
    }


class SavedActivations:
    """``saved_tensors_hooks`` pack hook summing the unique non-parameter storages saved for backward."""

    def __init__(self, params) -> None:
        self.param_storages = {p.untyped_storage().data_ptr() for p in params}
        self.storages: dict[int, int] = {}

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self.param_storages:
            self.storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    @property
    def gib(self) -> float:
        return sum(self.storages.values()) / 2**30


def peak_flops(device: torch.device, precision: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).lower()
    for (gpu, prec), tflops in PEAK_TFLOPS.items():
        if gpu in name and prec == precision:
            return tflops * 1e12
    return None


def run(size: str, batch: int, precision: str, compile_model: bool, steps: int, warmup: int,
        device: torch.device, checkpointing: bool) -> dict:
    task = VLPretrainTask(VLPretrainConfig(model={"size": size, "activation_checkpointing": checkpointing})).to(device)
    task.train()
    optimizer = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=1e-5, betas=(0.9, 0.98))
    data = synthetic_batch(task.config, batch, device)
    step_fn = torch.compile(task) if compile_model else task
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    saved = SavedActivations(task.parameters())
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        measure = i == 0 and not compile_model
        with autocast, (torch.autograd.graph.saved_tensors_hooks(saved, lambda t: t) if measure
                        else contextlib.nullcontext()):
            loss = step_fn(data)["losses"]["total"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    step = statistics.median(times)
    flops = task.flops_per_batch({k: v.cpu() for k, v in data.items()})
    peak = peak_flops(device, precision)
    memory = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    return {
        "size": size, "batch": batch, "precision": precision, "compile": compile_model,
        "step_ms": step * 1e3, "samples_s": batch / step, "tflops": flops / step / 1e12,
        "mfu": None if peak is None else flops / step / peak, "peak_gib": memory,
        "saved_gib": None if compile_model else saved.gib,
        "gflop_per_sample": flops / batch / 1e9,
    }


def print_table(rows: list[dict], device: torch.device) -> None:
    memory = "peak GiB (GPU)" if device.type == "cuda" else "peak GiB (RSS)"
    print(f"\nstage-3 step on {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, "
          f"torch {torch.__version__}")
    header = f"{'size':10}{'batch':>6}{'prec':>6}{'compile':>8}{'step ms':>10}{'samples/s':>11}{'TFLOP/s':>9}{'MFU':>7}{memory:>16}{'saved GiB':>11}{'GFLOP/sample':>14}"
    print(header)
    print("-" * len(header))
    for r in rows:
        mfu = "n/a" if r["mfu"] is None else f"{r['mfu'] * 100:.1f}%"
        saved = "n/a" if r["saved_gib"] is None else f"{r['saved_gib']:.2f}"
        print(f"{r['size']:10}{r['batch']:>6}{r['precision']:>6}{'on' if r['compile'] else 'off':>8}"
              f"{r['step_ms']:>10.1f}{r['samples_s']:>11.1f}{r['tflops']:>9.2f}{mfu:>7}{r['peak_gib']:>16.2f}"
              f"{saved:>11}{r['gflop_per_sample']:>14.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", choices=["small", "base", "base_plus", "large"],
                        help="a named size with the BERT vocabulary (tiny has a toy one)")
    parser.add_argument("--batch", type=int, nargs="+", default=[16])
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--compile", nargs="+", choices=["off", "on"], default=["off"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    for batch in args.batch:
        for compiled in args.compile:
            rows.append(run(args.size, batch, args.precision, compiled == "on", args.steps, args.warmup,
                            device, args.activation_checkpointing))
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print_table(rows, device)


if __name__ == "__main__":
    main()
