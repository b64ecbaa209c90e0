"""What every metric here shares: per-sample states keyed by an integer id.

Evaluation samplers pad ranks by repeating samples, so a metric that sums
per-rank counters counts those repeats twice. The metrics in this package
instead keep one row per sample (1-D tensors, ``dist_reduce_fx="cat"``, which
torchmetrics gathers across ranks trimming its own padding), tagged with the
sample's id, and drop repeated ids at ``compute()`` time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.distributed import gather_all_tensors


class IdKeyedMetric(Metric):
    """A ``Metric`` whose states are 1-D per-sample tensors gathered by concatenation."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._list_state_dtypes: dict[str, torch.dtype] = {}

    def add_list_state(self, name: str, dtype: torch.dtype) -> None:
        """Declare a per-sample state; ``dtype`` is what a rank without data contributes."""
        self.add_state(name, default=[], dist_reduce_fx="cat")
        self._list_state_dtypes[name] = dtype

    def append(self, name: str, values: Tensor) -> None:
        """Store ``values`` (flattened, cast to the state's dtype) on the metric's device."""
        dtype = self._list_state_dtypes[name]
        getattr(self, name).append(values.detach().reshape(-1).to(device=self.device, dtype=dtype))

    def gathered(self, name: str) -> Tensor:
        """The state as one tensor: every update on this rank, or on all ranks after sync."""
        value = getattr(self, name)
        if isinstance(value, Tensor):
            return value
        if not value:
            return torch.empty(0, dtype=self._list_state_dtypes[name], device=self.device)
        return torch.cat(value)

    def _sync_dist(
        self, dist_sync_fn: Callable = gather_all_tensors, process_group: Any | None = None
    ) -> None:
        # A rank that never called update() would otherwise contribute torchmetrics'
        # float32 placeholder, whose dtype does not match (and corrupts) int64 ids.
        for name, dtype in self._list_state_dtypes.items():
            if isinstance(getattr(self, name), list) and not getattr(self, name):
                setattr(self, name, [torch.empty(0, dtype=dtype, device=self.device)])
        super()._sync_dist(dist_sync_fn, process_group)


def first_index_per_id(ids: Tensor) -> Tensor:
    """Indices of the first occurrence of every distinct id, ordered by id.

    Ordering by id (not by arrival) makes every reduction that follows run in
    the same order whatever the number of ranks, so single- and multi-process
    results are bitwise equal. Repeats are the same sample evaluated twice
    (sampler padding), so keeping the first copy loses nothing.
    """
    order = torch.argsort(ids, stable=True)
    sorted_ids = ids[order]
    is_first = torch.ones_like(sorted_ids, dtype=torch.bool)
    is_first[1:] = sorted_ids[1:] != sorted_ids[:-1]
    return order[is_first]


def as_id_tensor(ids: Any, what: str) -> Tensor:
    """Integer ids (list or tensor) as a 1-D int64 tensor, refusing floats that may have rounded."""
    tensor = torch.as_tensor(ids)
    if tensor.numel() == 0:
        return torch.empty(0, dtype=torch.int64)
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"{what} must be integers, got dtype {tensor.dtype}")
    return tensor.reshape(-1).to(torch.int64)
