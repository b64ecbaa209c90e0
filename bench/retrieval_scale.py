"""Retrieval at COCO-5k and at web size: time per phase and peak memory (issue 19).

Synthetic data, so only the costs mean anything. Phases:

- encode: the small VLMo's ITC encoders on a few hundred random images and
  captions, extrapolated linearly to the set (marked "extrap.").
- score + rank: :func:`~vlmo_composer.metrics.rank_queries` in both directions
  (image queries over captions, caption queries over images) on random unit
  features of the small model's width, no top-k; top-k: the extra time to keep
  each query's top 16 / 128 as well. Measured at full size.
- re-rank: the ITM logits of each query's top k. The small model's fusion pass is
  timed on a few hundred pairs and multiplied by the distinct pairs of the set
  (at most ``(Ni + Nt) * k``, both directions), so it is extrapolated too; the
  rank rule on the top k (:func:`~vlmo_composer.evaluation.rerank.reranked_ranks`)
  is measured.
- web: 1,000 queries against a 10^6 gallery, peak memory against the full matrix.

Peak memory is the growth of the resident set during a phase, sampled by a thread
every millisecond; the script re-runs itself with a fixed glibc mmap threshold so
that freed blocks leave the resident set (otherwise RSS shows what malloc caches).
Then an extrapolation to VLMo-base on an H100 from the analytic FLOPs
(:mod:`vlmo_composer.model.flops`).

    python bench/retrieval_scale.py              # full size (~10 min on 2 cores)
    python bench/retrieval_scale.py --scale 0.1  # a quick look
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vlmo_composer.evaluation.rerank import reranked_ranks  # noqa: E402
from vlmo_composer.metrics import rank_queries  # noqa: E402
from vlmo_composer.metrics.retrieval import BYTES_PER_BLOCK_ELEMENT, DEFAULT_CHUNK_SIZE, DEFAULT_GALLERY_CHUNK  # noqa: E402
from vlmo_composer.model import VLMo, VLMoConfig  # noqa: E402
from vlmo_composer.model.flops import fusion_flops, image_tokens, projection_flops, unimodal_flops  # noqa: E402

SETS = {"Flickr-1k": (1_000, 5), "COCO-5k": (5_000, 5)}  # images, captions per image
RERANK_KS = (16, 128)
H100_BF16_FLOPS, MFU = 989e12, 0.40
MIB = 2**20


class PeakRSS:
    """Peak growth of the resident set inside a ``with`` block (a sampling thread)."""

    def __enter__(self) -> "PeakRSS":
        self.start = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def mib(self) -> float:
        return (self.peak - self.start) / MIB


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed(fn):
    """``(result, seconds, peak MiB)`` of one call."""
    with PeakRSS() as rss:
        start = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - start
    return out, seconds, rss.mib


def unit(n: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, dim, generator=generator), dim=1)


def synthetic_set(num_images: int, captions: int, dim: int, seed: int = 0):
    """Random image features and captions near their image (so ranks are not all at the bottom)."""
    g = torch.Generator().manual_seed(seed)
    images = unit(num_images, dim, g)
    text_to_image = torch.arange(num_images).repeat_interleave(captions)
    texts = torch.nn.functional.normalize(images[text_to_image] + 1.5 * unit(len(text_to_image), dim, g), dim=1)
    return images, texts, text_to_image


def both_directions(images, texts, text_to_image, k: int):
    labels = torch.arange(len(images))
    return (rank_queries(images, texts, labels, text_to_image, k), rank_queries(texts, images, text_to_image, labels, k))


def dual_phases(name: str, num_images: int, captions: int, dim: int) -> dict:
    images, texts, text_to_image = synthetic_set(num_images, captions, dim)
    row = {"set": name, "images": num_images, "texts": len(texts), "full_mib": num_images * len(texts) * 4 / MIB}
    _, row["rank_s"], row["rank_mib"] = timed(lambda: both_directions(images, texts, text_to_image, 0))
    for k in RERANK_KS:
        (tr, ir), seconds, row[f"mib_{k}"] = timed(lambda: both_directions(images, texts, text_to_image, k))
        row[f"topk_{k}_s"] = max(seconds - row["rank_s"], 0.0)
        itm_tr, itm_ir = torch.randn_like(tr.top_scores), torch.randn_like(ir.top_scores)  # stand-ins for ITM logits
        _, row[f"rule_{k}_s"], _ = timed(lambda: (
            reranked_ranks(tr.ranks, text_to_image[tr.top_indices] == torch.arange(len(images))[:, None],
                           (itm_tr + tr.top_scores).double()),
            reranked_ranks(ir.ranks, ir.top_indices == text_to_image[:, None], (itm_ir + ir.top_scores).double()),
        ))
        keys = torch.cat([(torch.arange(len(images))[:, None] * len(texts) + tr.top_indices).flatten(),
                          (ir.top_indices * len(texts) + torch.arange(len(texts))[:, None]).flatten()])
        row[f"pairs_{k}"] = len(keys.unique())
    return row


@torch.no_grad()
def model_costs(num_items: int, batch: int = 64) -> dict:
    """Seconds per image, per caption and per ITM pair of the small model (CPU, fp32)."""
    torch.manual_seed(0)
    config = VLMoConfig.named("small")
    model = VLMo(config).eval()
    pixels = torch.randn(batch, 3, config.image_size, config.image_size)
    ids = torch.randint(1000, 3000, (batch, config.max_text_len))
    mask = torch.ones_like(ids)
    model.encode_image(pixels[:2]), model.match_scores(ids[:2], mask[:2], pixels[:2])  # warm up
    steps = max(num_items // batch, 1)
    costs = {}
    for name, fn in (("image_s", lambda: model.encode_image(pixels)), ("text_s", lambda: model.encode_text(ids, mask)),
                     ("pair_s", lambda: model.match_scores(ids, mask, pixels))):
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        costs[name] = (time.perf_counter() - start) / (steps * batch)
    costs["items"] = steps * batch
    return costs


def web_gallery(queries: int, gallery: int, dim: int, k: int = 16) -> dict:
    g = torch.Generator().manual_seed(1)
    query_feats, gallery_feats = unit(queries, dim, g), unit(gallery, dim, g)
    labels = torch.randint(0, queries, (gallery,), generator=g)
    _, seconds, mib = timed(lambda: rank_queries(query_feats, gallery_feats, torch.arange(queries), labels, k))
    bound = (BYTES_PER_BLOCK_ELEMENT * min(DEFAULT_CHUNK_SIZE, queries) * min(DEFAULT_GALLERY_CHUNK, gallery)
             + 12 * queries * k + 8 * queries) / MIB
    return {"queries": queries, "gallery": gallery, "k": k, "seconds": seconds, "peak_mib": mib, "bound_mib": bound,
            "full_mib": queries * gallery * 4 / MIB}


def base_on_h100(num_images: int, num_texts: int, pairs: dict[int, int]) -> dict:
    """Seconds on an H100 for VLMo-base from the analytic FLOPs at ``MFU`` of the bf16 peak."""
    config = VLMoConfig.named("base")
    rate = H100_BF16_FLOPS * MFU
    image = unimodal_flops(config, image_tokens(config), with_vl=False, image=True) + projection_flops(config)
    text = unimodal_flops(config, config.max_text_len, with_vl=False, image=False) + projection_flops(config)
    pair = fusion_flops(config, config.max_text_len) + 2 * config.hidden_size * 2
    scores = 2 * 2 * num_images * num_texts * config.hidden_size  # both directions
    out = {"encode_s": (num_images * image + num_texts * text) / rate, "scores_s": scores / rate,
           "gflop_image": image / 1e9, "gflop_text": text / 1e9, "gflop_pair": pair / 1e9}
    out.update({f"rerank_{k}_s": n * pair / rate for k, n in pairs.items()})
    return out


def print_report(rows: list[dict], costs: dict, web: dict, base: dict[str, dict], dim: int) -> None:
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, features D={dim} float32, "
          f"chunk {DEFAULT_CHUNK_SIZE} x gallery chunk {DEFAULT_GALLERY_CHUNK}")
    print("\n| set | images x captions | encode s (extrap.) | score+rank s | +top-16 s | +top-128 s "
          "| peak MiB (top-128) | full matrix MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        encode = r["images"] * costs["image_s"] + r["texts"] * costs["text_s"]
        print(f"| {r['set']} | {r['images']:,} x {r['texts']:,} | {encode:.1f} | {r['rank_s']:.2f} | "
              f"{r['topk_16_s']:.2f} | {r['topk_128_s']:.2f} | {r['mib_128']:.0f} | {r['full_mib']:.0f} |")
    print(f"\nsmall model, CPU, fp32, measured on {costs['items']} items each: "
          f"{costs['image_s'] * 1e3:.2f} ms/image, {costs['text_s'] * 1e3:.2f} ms/caption, "
          f"{costs['pair_s'] * 1e3:.2f} ms per ITM pair")
    print("\n| set | k | distinct ITM pairs | ITM ms per query (extrap.) | ITM s total (extrap.) | rank rule s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        for k in RERANK_KS:
            pairs = r[f"pairs_{k}"]
            print(f"| {r['set']} | {k} | {pairs:,} | {k * costs['pair_s'] * 1e3:.1f} | "
                  f"{pairs * costs['pair_s']:.0f} | {r[f'rule_{k}_s']:.3f} |")
    print(f"\n| web gallery | k | seconds | peak MiB | stated bound MiB | full matrix MiB |\n|---|---|---|---|---|---|\n"
          f"| {web['queries']:,} x {web['gallery']:,} | {web['k']} | {web['seconds']:.1f} | {web['peak_mib']:.0f} | "
          f"{web['bound_mib']:.0f} | {web['full_mib']:,.0f} |")
    print(f"\nVLMo-base on an H100, analytic FLOPs at {MFU:.0%} of {H100_BF16_FLOPS / 1e12:.0f} TFLOP/s bf16 "
          f"({base['COCO-5k']['gflop_image']:.1f} GFLOP/image, {base['COCO-5k']['gflop_text']:.1f} GFLOP/caption, "
          f"{base['COCO-5k']['gflop_pair']:.1f} GFLOP/ITM pair):")
    print("\n| set | encode s | dual scores s (matmul only) | re-rank k=16 s | re-rank k=128 s |\n|---|---|---|---|---|")
    for name, b in base.items():
        print(f"| {name} | {b['encode_s']:.2f} | {b['scores_s'] * 1e3:.2f} ms | {b['rerank_16_s']:.1f} | "
              f"{b['rerank_128_s']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of every set size (quick looks)")
    parser.add_argument("--model-items", type=int, default=256, help="images, captions and pairs the model encodes")
    args = parser.parse_args()
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:  # freed blocks must leave the resident set
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"})
    dim = VLMoConfig.named("small").hidden_size
    costs = model_costs(args.model_items)
    rows = [dual_phases(name, max(int(n * args.scale), 2), captions, dim) for name, (n, captions) in SETS.items()]
    web = web_gallery(max(int(1_000 * args.scale), 2), max(int(1_000_000 * args.scale), 2), dim)
    base = {r["set"]: base_on_h100(r["images"], r["texts"], {k: r[f"pairs_{k}"] for k in RERANK_KS}) for r in rows}
    print_report(rows, costs, web, base, dim)


if __name__ == "__main__":
    main()
