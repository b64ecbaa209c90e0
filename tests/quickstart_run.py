"""``make quickstart`` exactly as the README prints it, run once per test session.

The learning tests fine-tune from its checkpoint and the README's inference block
runs on its output, so the product as shipped (Makefile, YAML, commands) is what
they test, and one pre-training serves them all. It runs in a scratch folder
that links the checkout's entry points, so the checkout's own ``data/`` and
``runs/`` are left alone.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What `make quickstart` reads from the checkout (relative paths, as printed).
ENTRY_POINTS = ("Makefile", "pyproject.toml", ".venv", "train.py", "eval.py", "data_prep", "yamls", "vlmo_composer")


@dataclass(frozen=True)
class QuickstartRun:
    folder: Path   # where `make quickstart` ran
    output: str    # what it printed

    @property
    def data(self) -> Path:
        return self.folder / "data/synthetic"

    @property
    def checkpoint(self) -> Path:
        return self.folder / "runs/quickstart/checkpoints/latest-rank0.pt"

    @property
    def metrics(self) -> dict:
        """``runs/quickstart/metrics.json``: eval.py's numbers per split."""
        return json.loads((self.folder / "runs/quickstart/metrics.json").read_text())

    def training_series(self, name: str) -> list[tuple[int, float]]:
        """``[(step, value)]`` of one training metric, read as ``curves`` reads the run's ``metrics.jsonl``."""
        from vlmo_composer.training.curves import read_series

        return read_series(self.folder / "runs/quickstart/checkpoints/metrics.jsonl")[name]


def run_quickstart(folder: Path) -> QuickstartRun:
    for name in ENTRY_POINTS:
        (folder / name).symlink_to(REPO / name)
    done = subprocess.run(["make", "quickstart"], cwd=folder, capture_output=True, text=True, timeout=2400)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"make quickstart failed ({done.returncode}):\n{output[-6000:]}"
    return QuickstartRun(folder, output)
