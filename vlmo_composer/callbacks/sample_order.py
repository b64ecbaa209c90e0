"""Record which samples every step trained on, per rank (audits resumption and mixing)."""

from __future__ import annotations

import json
import os

from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist


class SampleOrderLogger(Callback):
    """Append ``{"batch": n, "sample_index": [...]}`` per step to ``path`` (``{rank}`` expanded).

    Comparing two such files shows whether a resumed run saw exactly the batches
    an uninterrupted one did.
    """

    def __init__(self, path: str = "sample_order-rank{rank}.jsonl") -> None:
        self.path = path

    def batch_end(self, state: State, logger: Logger) -> None:
        indices = state.batch["sample_index"].tolist() if "sample_index" in state.batch else []
        path = self.path.format(rank=dist.get_global_rank(), run_name=state.run_name)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "a") as fh:
            fh.write(json.dumps({"batch": int(state.timestamp.batch), "sample_index": indices}) + "\n")
