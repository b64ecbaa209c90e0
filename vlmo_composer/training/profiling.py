"""Device-independent measurements of a training step (used by bench/train_step.py and tests).

* :class:`HostSyncCounter`: the ops that force a GPU to wait for the host (or the
  host for the GPU), counted at the dispatcher, so a CPU run finds them too;
* :class:`SavedActivations`: bytes autograd saves for backward (unique storages);
* :func:`graph_breaks`: ``torch._dynamo.explain`` of a callable;
* :func:`compiled_graphs`: dynamo's count of graphs compiled so far;
* :func:`synthetic_vl_batch`: a stage-3 batch shaped like the loader's.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from vlmo_composer.objectives.mlm import IGNORE_INDEX, default_mlm_slots

aten = torch.ops.aten

# Ops whose result size or value the host must read before it can go on.
SYNC_OPS = {
    aten._local_scalar_dense.default: "item",
    aten.nonzero.default: "nonzero",
    aten.masked_select.default: "masked_select",
    aten._unique2.default: "unique",
    aten.unique_dim.default: "unique",
    aten.unique_consecutive.default: "unique",
    aten._unique.default: "unique",
}


def _has_bool_index(indices) -> bool:
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices if i is not None)


class HostSyncCounter(TorchDispatchMode):
    """Counts host-device synchronisations by kind while active.

    Boolean-mask indexing (``x[mask]``, ``x[mask] = v``) needs the mask's count on
    the host; a copy from an accelerator to the CPU waits for it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = SYNC_OPS.get(func)
        if kind is None and func in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default):
            kind = "boolean indexing" if _has_bool_index(args[1]) else None
        if kind is None and func is aten._to_copy.default and isinstance(args[0], torch.Tensor):
            target = kwargs.get("device")
            if args[0].device.type != "cpu" and target is not None and torch.device(target).type == "cpu":
                kind = "copy to host"
        if kind is not None:
            self.counts[kind] += 1
        return func(*args, **kwargs)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class SavedActivations:
    """Unique non-parameter storages saved for backward: what ``saved_tensors_hooks`` sees
    plus the outputs selective checkpointing keeps in its own cache (which bypass the hooks).
    Read :attr:`gib` after the forward (backward empties those caches). Works under
    ``FakeTensorMode`` (sizes without compute)."""

    def __init__(self, params) -> None:
        self.param_storages = {p.untyped_storage()._cdata for p in params}
        self.storages: dict[int, int] = {}
        self.caches: list = []

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in self.param_storages:
            self.storages[storage._cdata] = storage.nbytes()
        return tensor

    @contextlib.contextmanager
    def hooks(self):
        from vlmo_composer.model.checkpointing import selective_cache_observers

        selective_cache_observers.append(self.caches.append)
        try:
            with torch.autograd.graph.saved_tensors_hooks(self, lambda t: t):
                yield self
        finally:
            selective_cache_observers.remove(self.caches.append)

    @property
    def gib(self) -> float:
        storages = dict(self.storages)
        for cache in self.caches:
            for outputs in cache.values():
                for leaf in torch.utils._pytree.tree_leaves(outputs):
                    tensor = getattr(leaf, "val", leaf)
                    if isinstance(tensor, torch.Tensor):
                        storages[tensor.untyped_storage()._cdata] = tensor.untyped_storage().nbytes()
        return sum(storages.values()) / 2**30


def graph_breaks(fn: Callable, *args: Any, **kwargs: Any) -> tuple[int, list[str]]:
    """Graph breaks dynamo finds tracing ``fn(*args)``, and why (one line each)."""
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(fn)(*args, **kwargs)
    reasons = [f"{r.reason} ({r.user_stack[-1].filename}:{r.user_stack[-1].lineno})" if r.user_stack else r.reason
               for r in explanation.break_reasons]
    return explanation.graph_break_count, reasons


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process (flat across steps = no recompilation)."""
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def synthetic_vl_batch(config, batch: int, device: torch.device | str = "cpu", seed: int = 0) -> dict:
    """Random stage-3 inputs: captions padded to ``max_text_len`` (half to full length),
    ``default_mlm_slots`` tokens masked per caption (the collator's cap, always reached
    on long captions), ids from the upper vocabulary, CLS first."""
    gen = torch.Generator().manual_seed(seed)
    text_len, vocab = config.max_text_len, config.vocab_size
    ids = torch.randint(min(1000, vocab // 2), vocab, (batch, text_len), generator=gen)
    ids[:, 0] = min(101, vocab - 1)
    lengths = torch.randint(text_len // 2, text_len + 1, (batch,), generator=gen)
    real = torch.arange(text_len)[None, :] < lengths[:, None]
    mask = real.long()
    keys = torch.rand(batch, text_len, generator=gen).masked_fill(~real, 2.0)
    keys[:, 0] = 2.0  # never mask CLS
    chosen = keys.argsort(dim=1)[:, : default_mlm_slots(text_len)]
    masked = torch.zeros(batch, text_len, dtype=torch.bool).scatter_(1, chosen, True) & real
    masked[:, 0] = False
    labels = torch.where(masked, ids, torch.full_like(ids, IGNORE_INDEX))
    return {
        "pixel_values": torch.randn(batch, 3, config.image_size, config.image_size, generator=gen).to(device),
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "mlm_input_ids": torch.where(masked, torch.full_like(ids, min(103, vocab - 1)), ids).to(device),
        "mlm_labels": labels.to(device),
    }
