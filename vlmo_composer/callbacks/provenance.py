"""Every checkpoint records the data it was trained on: each training stream's conversion report summary.

Composer saves each callback's ``state_dict()`` in the checkpoint, under
``state["callbacks"]["DataProvenance"]``, so the record travels with the weights:
``{"train": [{stream, location, report}], "eval": {label: [...]}}`` (see
:func:`vlmo_composer.data.provenance.data_provenance`; ``report`` is None where no
``conversion_report.json`` could be read). A resumed run records the data it reads
now; the record of the run it resumed from is kept as ``resumed_from``.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from composer.core import Callback

from vlmo_composer.data.provenance import data_provenance


class DataProvenance(Callback):
    def __init__(self, train_dataset: Mapping[str, Any], eval_datasets: Sequence[tuple[str, Mapping[str, Any]]] = ()):
        self.record: dict[str, Any] = {
            "train": data_provenance(train_dataset),
            "eval": {label: data_provenance(dataset) for label, dataset in eval_datasets},
        }
        self.resumed_from: Optional[dict[str, Any]] = None

    def state_dict(self) -> dict[str, Any]:
        return {**self.record, **({"resumed_from": self.resumed_from} if self.resumed_from else {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        earlier = {k: v for k, v in state.items() if k != "resumed_from"}
        if earlier and earlier != self.record:
            self.resumed_from = earlier
