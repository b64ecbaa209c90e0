"""How long ``train.py`` / ``eval.py`` take to answer ``--help`` and a missing YAML (wall seconds).

    python bench/cli_startup.py [--runs 3]

Each command runs ``--runs`` times in a new process from the repository root; the
median is printed. These answers come before torch and Composer are imported.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = (["train.py", "--help"], ["eval.py", "--help"], ["train.py", "missing.yaml"], ["eval.py", "missing.yaml"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    for command in COMMANDS:
        seconds = []
        for _ in range(args.runs):
            start = time.perf_counter()
            subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True)
            seconds.append(time.perf_counter() - start)
        print(f"python {' '.join(command)}: median {statistics.median(seconds):.2f} s "
              f"({', '.join(f'{s:.2f}' for s in seconds)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
