"""``metrics.jsonl`` beside the checkpoints: every logged scalar, one JSON object per step and event.

Written locally as the run goes; when ``save_folder`` is on an object store the
file is kept in a local folder of the same name (as Composer keeps checkpoints)
and uploaded after every evaluation and at the end of the run. A resumed run
continues the file, dropping lines past the step it resumed from.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from composer.core import State
from composer.loggers import Logger, LoggerDestination
from composer.utils import dist, maybe_create_object_store_from_uri, parse_uri

from vlmo_composer import stores
from vlmo_composer.common.run_paths import run_folder

FILENAME = "metrics.jsonl"


def metrics_location(save_folder: str, run_name: Optional[str]) -> str:
    """Where a run's metrics file goes (``{run_name}`` expanded), local path or a store URL."""
    return f"{run_folder(save_folder, run_name)}/{FILENAME}"


class MetricsFile(LoggerDestination):
    """Append ``{"batch", "epoch", "sample", <metric>: value, ...}`` lines (rank 0 only).

    One line per training step and one per evaluation round (all loaders).
    """

    def __init__(self, save_folder: str) -> None:
        self.save_folder = save_folder
        self.location = ""
        self.local_path: Optional[Path] = None
        self.state: Optional[State] = None
        self.pending: dict[str, Any] = {}

    # ----------------------------------------------------------------- where
    def init(self, state: State, logger: Logger) -> None:
        self.state = state
        if dist.get_global_rank() != 0:
            return
        self.location = metrics_location(self.save_folder, state.run_name)
        if stores.is_remote(self.location):
            _, _, key = parse_uri(self.location)
            self.local_path = Path(key)
        else:
            self.local_path = Path(self.location)
        self.local_path.parent.mkdir(parents=True, exist_ok=True)

    def fit_start(self, state: State, logger: Logger) -> None:
        """A fresh run starts the file; a resumed one keeps the lines up to where it resumed."""
        if self.local_path is None:
            return
        resumed_at = int(state.timestamp.batch)
        if resumed_at > 0 and stores.is_remote(self.location):
            self._download()
        lines = self.local_path.read_text().splitlines() if resumed_at > 0 and self.local_path.exists() else []
        kept = [line for line in lines if json.loads(line).get("batch", 0) <= resumed_at]
        self.local_path.write_text("".join(line + "\n" for line in kept))

    # ----------------------------------------------------------------- what
    def log_metrics(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        if self.local_path is None:
            return
        for name, value in metrics.items():  # dict-valued metrics arrive flattened from FlattenMetricDicts
            try:
                self.pending[name] = float(value)
            except (TypeError, ValueError):
                continue

    def _flush(self) -> None:
        if self.local_path is None or not self.pending or self.state is None:
            return
        timestamp = self.state.timestamp
        record = {"batch": int(timestamp.batch), "epoch": int(timestamp.epoch), "sample": int(timestamp.sample),
                  **self.pending}
        with open(self.local_path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        self.pending = {}

    def batch_end(self, state: State, logger: Logger) -> None:
        self._flush()

    def eval_after_all(self, state: State, logger: Logger) -> None:
        self._flush()
        self._upload()

    def fit_end(self, state: State, logger: Logger) -> None:
        self._flush()
        self._upload()

    def close(self, state: State, logger: Logger) -> None:
        self._flush()

    # ----------------------------------------------------------------- object store
    def _object_store(self):
        return maybe_create_object_store_from_uri(self.location)

    def _upload(self) -> None:
        if self.local_path is None or not stores.is_remote(self.location) or not self.local_path.exists():
            return
        _, _, key = parse_uri(self.location)
        self._object_store().upload_object(key, str(self.local_path))

    def _download(self) -> None:
        _, _, key = parse_uri(self.location)
        try:
            self._object_store().download_object(key, str(self.local_path), overwrite=True)
        except FileNotFoundError:
            pass
        except Exception as err:  # a missing object reads as ClientError on some stores
            if "404" not in str(err) and "Not Found" not in str(err) and "NoSuchKey" not in str(err):
                raise
        os.makedirs(self.local_path.parent, exist_ok=True)
