"""Loss and metric curves from a run's ``metrics.jsonl`` as one PNG.

``python -m vlmo_composer.training.curves runs/quickstart/checkpoints/metrics.jsonl runs/quickstart/curves.png``
draws every training loss term (and the learning rate) against the step, and
every evaluation scalar against the step it was evaluated at.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Optional


def read_series(path: Path) -> dict[str, list[tuple[int, float]]]:
    """``{metric: [(batch, value), ...]}`` from a metrics file."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for line in path.read_text().splitlines():
        record = json.loads(line)
        for name, value in record.items():
            if name not in ("batch", "epoch", "sample"):
                series[name].append((record["batch"], value))
    return dict(series)


def plot(series: dict[str, list[tuple[int, float]]], out: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {
        "training loss": sorted(k for k in series if k.startswith("loss/train/")),
        "learning rate": sorted(k for k in series if k.startswith("lr-"))[:1],
        "evaluation": sorted(k for k in series if k.startswith("metrics/")),
    }
    panels = {name: keys for name, keys in panels.items() if keys}
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (name, keys) in zip(axes[0], panels.items()):
        for key in keys:
            steps, values = zip(*series[key])
            ax.plot(steps, values, marker="o" if len(steps) < 20 else None, markersize=3,
                    label=key.split("/", 2)[-1] if name != "learning rate" else "lr")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", help="a metrics.jsonl written by training")
    parser.add_argument("out", help="the PNG to write")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    path = Path(args.metrics)
    if not path.is_file():
        print(f"curves: {path} does not exist (it is written beside the checkpoints)", file=sys.stderr)
        return 2
    plot(read_series(path), Path(args.out), title=str(path))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
