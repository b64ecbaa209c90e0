"""Loss and metric curves from one or more runs' ``metrics.jsonl`` as one PNG.

``python -m vlmo_composer.training.curves runs/quickstart/checkpoints/metrics.jsonl runs/quickstart/curves.png``
draws each training loss term (the ITM one next to the loss of a head that only
knows the class prior), the learning rate, and retrieval recall in percent
against the step (one evaluation: recall against K, values written on the points).

``python -m vlmo_composer.training.curves a/metrics.jsonl b/metrics.jsonl -o compare.png``
overlays several runs, one colour per run, named after their run folders.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

Series = dict[str, list[tuple[int, float]]]

# One positive and two hard negatives per pair: a head that predicts only the prior (1/3 positive)
# has this cross-entropy, the level an ITM loss must get below to have learned anything.
ITM_PRIOR_LOSS = -(1 / 3 * math.log(1 / 3) + 2 / 3 * math.log(2 / 3))
ITM_PRIOR_LABEL = f"ITM prior-only ({ITM_PRIOR_LOSS:.3f})"
LOSS_NAMES = {"total": "total", "itc": "ITC", "itm": "ITM", "mlm": "MLM"}
RECALL = re.compile(r"^metrics/(?P<loader>[^/]+)/RetrievalRecall/(?P<chance>chance_)?(?P<dir>tr|ir)_r(?P<k>\d+)$")
RUN_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive")
K_COLOURS = {1: "tab:blue", 5: "tab:orange", 10: "tab:green"}
DIRECTION = {"tr": ("TR", "-", "o"), "ir": ("IR", "--", "s")}  # legend name, line style, marker


@dataclass
class Run:
    """One metrics file: the name it is shown under, its series and the last step it reached."""

    name: str
    series: Series

    @property
    def steps(self) -> int:
        return max((step for points in self.series.values() for step, _ in points), default=0)


def read_series(path: Path) -> Series:
    """``{metric: [(batch, value), ...]}`` from a metrics file."""
    series: Series = defaultdict(list)
    for line in path.read_text().splitlines():
        record = json.loads(line)
        for name, value in record.items():
            if name not in ("batch", "epoch", "sample"):
                series[name].append((record["batch"], value))
    return dict(series)


def run_name(path: Path) -> str:
    """The run's name from its folder: the file sits in ``save_folder`` with ``{run_name}`` filled in,
    which the shipped YAMLs spell ``runs/{run_name}/checkpoints``."""
    folder = path.resolve().parent
    return folder.parent.name if folder.name == "checkpoints" and folder.parent.name else folder.name


def load_runs(paths: list[Path]) -> list[Run]:
    """The runs behind ``paths``; two runs with the same folder name are told apart by their paths."""
    names = [run_name(p) for p in paths]
    if len(set(names)) < len(names):
        names = [str(p.parent) for p in paths]
    return [Run(name, read_series(p)) for name, p in zip(names, paths)]


def _steps_title(run: Run) -> str:
    return f"{run.steps} step{'' if run.steps == 1 else 's'}"


def figure_title(runs: list[Run]) -> str:
    """``name — N steps`` for one run, ``a (N steps) vs b (M steps)`` for an overlay."""
    if len(runs) == 1:
        return f"{runs[0].name} — {_steps_title(runs[0])}"
    return " vs ".join(f"{run.name} ({_steps_title(run)})" for run in runs)


def _panels(runs: list[Run]) -> list[tuple[str, list[str]]]:
    """``(kind, keys)`` per panel: one per loss term (their scales differ tenfold), lr, recall, other eval."""
    keys = sorted({key for run in runs for key in run.series})
    losses = [k for k in keys if k.startswith("loss/train/")]
    order = list(LOSS_NAMES)
    losses.sort(key=lambda k: (order.index(k.rsplit("/", 1)[1]) if k.rsplit("/", 1)[1] in order else len(order), k))
    panels = [("loss", [k]) for k in losses]
    lrs = [k for k in keys if k.startswith("lr-")][:1]
    if lrs:
        panels.append(("lr", lrs))
    recalls = [k for k in keys if RECALL.match(k)]
    if recalls:
        panels.append(("recall", recalls))
    others = [k for k in keys if k.startswith("metrics/") and k not in recalls
              and not k.endswith("/RetrievalRecall/r_mean")]  # the mean of the recalls drawn
    if others:
        panels.append(("eval", others))
    return panels


def _integer_steps(ax) -> None:
    """Whole steps on the x axis; a single step gets its neighbours, not a 1.90-2.10 axis."""
    from matplotlib.ticker import MaxNLocator

    if ax.dataLim.width == 0 and ax.has_data():
        ax.set_xlim(ax.dataLim.x0 - 1, ax.dataLim.x0 + 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")


def _line(ax, points: list[tuple[int, float]], scale: float = 1.0, **style) -> None:
    """Points marked while there are few enough to tell apart."""
    steps, values = zip(*points)
    marker = style.pop("marker", "o")
    ax.plot(steps, [v * scale for v in values], marker=marker if len(steps) < 20 else None, markersize=3, **style)


def _draw_loss(ax, runs: list[Run], key: str) -> None:
    term = key.rsplit("/", 1)[1]
    name = LOSS_NAMES.get(term, term)
    for i, run in enumerate(runs):
        if key in run.series:
            _line(ax, run.series[key], color=RUN_COLOURS[i % len(RUN_COLOURS)], label=run.name)
    if term == "itm":
        ax.axhline(ITM_PRIOR_LOSS, color="grey", linestyle="--", linewidth=1, label=ITM_PRIOR_LABEL)
    ax.set_title(f"{name} loss")
    ax.set_ylabel("loss")
    _integer_steps(ax)


def _draw_lr(ax, runs: list[Run], key: str) -> None:
    for i, run in enumerate(runs):
        if key in run.series:
            _line(ax, run.series[key], color=RUN_COLOURS[i % len(RUN_COLOURS)], label=run.name)
    ax.set_title("learning rate")
    ax.set_ylabel("learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    _integer_steps(ax)


def _label(run: Run, runs: list[Run], loader: str, loaders: list[str], name: str) -> str:
    """``TR@1``, prefixed by the loader when there are several and by the run in an overlay."""
    return " ".join(([run.name] if len(runs) > 1 else []) + ([loader] if len(loaders) > 1 else []) + [name])


def _draw_recall(ax, runs: list[Run], keys: list[str]) -> None:
    """Recall (%) against the step; against K when every run was evaluated once (a column of dots at
    one step says nothing); chance levels, where the file has them, as grey lines."""
    matches = [RECALL.match(k) for k in keys]
    recalls = sorted((m for m in matches if not m["chance"]),
                     key=lambda m: (m["loader"], int(m["k"]), m["dir"] != "tr"))  # TR@1, IR@1, TR@5, ...
    loaders = sorted({m["loader"] for m in matches})
    ks = sorted({int(m["k"]) for m in recalls})
    steps = [{step for m in recalls for step, _ in run.series.get(m.string, [])} for run in runs]
    once = all(len(s) <= 1 for s in steps)
    if once:
        _draw_recall_once(ax, runs, loaders, ks)
    else:
        ks = ks[:1] if len(runs) > 1 else ks  # an overlay over steps: R@1 only, or the panel is a tangle
        _draw_recall_steps(ax, runs, [m for m in recalls if int(m["k"]) in ks], loaders, ks)
    chances = sorted((m for m in matches if m["chance"] and int(m["k"]) in ks), key=lambda m: m["dir"] != "tr")
    _draw_chance(ax, runs, chances, loaders)
    title = "retrieval recall"
    if once and len(runs) == 1 and steps[0]:
        title += f" at step {max(steps[0])}"
    ax.set_title(title + (f" ({loaders[0]})" if len(loaders) == 1 else ""))
    ax.set_ylabel("recall (%)")


def _draw_recall_steps(ax, runs: list[Run], recalls: list, loaders: list[str], ks: list[int]) -> None:
    """Recall (%) against the step: one colour per K (per run in an overlay), TR solid, IR dashed."""
    for i, run in enumerate(runs):
        for m in recalls:
            if m.string not in run.series:
                continue
            name, linestyle, marker = DIRECTION[m["dir"]]
            k = int(m["k"])
            colour = RUN_COLOURS[i % len(RUN_COLOURS)] if len(runs) > 1 else K_COLOURS.get(k, f"C{ks.index(k) + 3}")
            _line(ax, run.series[m.string], 100.0, color=colour, linestyle=linestyle, marker=marker,
                  label=_label(run, runs, m["loader"], loaders, f"{name}@{k}"))
    _integer_steps(ax)


def _draw_chance(ax, runs: list[Run], chances: list, loaders: list[str]) -> None:
    """A grey line per logged chance level (the last value of each run; one line when runs agree)."""
    drawn = set()
    for m in chances:
        for run in runs:
            if m.string not in run.series:
                continue
            value = run.series[m.string][-1][1] * 100
            label = f"chance {DIRECTION[m['dir']][0]}@{m['k']}" + (f" ({m['loader']})" if len(loaders) > 1 else "")
            if (label, round(value, 6)) in drawn:
                continue
            drawn.add((label, round(value, 6)))
            ax.axhline(value, color="grey", linestyle=":" if m["dir"] == "tr" else "-.", linewidth=1, label=label)


def _draw_recall_once(ax, runs: list[Run], loaders: list[str], ks: list[int]) -> None:
    """One evaluation per run: recall (%) against K, TR solid and IR dashed, each value written on its point."""
    for i, run in enumerate(runs):
        for loader in loaders:
            for direction, (name, linestyle, marker) in DIRECTION.items():
                pairs = [(k, run.series[f"metrics/{loader}/RetrievalRecall/{direction}_r{k}"][-1][1] * 100)
                         for k in ks if f"metrics/{loader}/RetrievalRecall/{direction}_r{k}" in run.series]
                if not pairs:
                    continue
                colour = (RUN_COLOURS[i % len(RUN_COLOURS)] if len(runs) > 1
                          else ("tab:blue" if direction == "tr" else "tab:red"))
                xs = [ks.index(k) for k, _ in pairs]
                values = [v for _, v in pairs]
                ax.plot(xs, values, color=colour, linestyle=linestyle, marker=marker,
                        label=_label(run, runs, loader, loaders, name))
                for x, v in zip(xs, values):
                    ax.annotate(f"{v:.1f}", (x, v), textcoords="offset points", xytext=(0, 5), ha="center",
                                fontsize=7, color=colour)
    ax.set_xticks(range(len(ks)), [f"R@{k}" for k in ks])
    ax.set_xlim(-0.5, len(ks) - 0.5)
    ax.set_xlabel("K")
    ax.margins(y=0.15)


def _draw_eval(ax, runs: list[Run], keys: list[str]) -> None:
    for i, run in enumerate(runs):
        for j, key in enumerate(keys):
            if key in run.series:
                label = " ".join(([run.name] if len(runs) > 1 else []) + [key.split("/", 1)[1]])
                _line(ax, run.series[key], color=RUN_COLOURS[(i if len(runs) > 1 else j) % len(RUN_COLOURS)],
                      label=label)
    ax.set_title("evaluation")
    ax.set_ylabel("value")
    _integer_steps(ax)


def build_figure(runs: list[Run]):
    """The figure for ``runs`` (tests inspect it; :func:`plot` saves it)."""
    from matplotlib.figure import Figure

    panels = _panels(runs)
    cols = min(4, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / cols))
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    for ax, (kind, keys) in zip(axes, panels):
        if kind == "loss":
            _draw_loss(ax, runs, keys[0])
        elif kind == "lr":
            _draw_lr(ax, runs, keys[0])
        elif kind == "recall":
            _draw_recall(ax, runs, keys)
        else:
            _draw_eval(ax, runs, keys)
        ax.grid(alpha=0.3)
        if len(runs) > 1 or kind in ("recall", "eval") or ITM_PRIOR_LABEL in ax.get_legend_handles_labels()[1]:
            ax.legend(fontsize=7)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(figure_title(runs))
    return fig


def plot(runs: list[Run], out: Path):
    """Write the PNG of ``runs`` to ``out`` and return the figure."""
    fig = build_figure(runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return fig


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", nargs="+",
                        help="metrics.jsonl files written by training (the last may be the PNG, as in "
                             "'curves METRICS.jsonl OUT.png')")
    parser.add_argument("-o", "--out", help="the PNG to write")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    paths, out = list(args.metrics), args.out
    if out is None and len(paths) > 1 and paths[-1].lower().endswith(".png"):
        out = paths.pop()
    if out is None:
        parser.error("say where the PNG goes: -o OUT.png (or METRICS.jsonl OUT.png)")
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        print(f"curves: {', '.join(missing)} does not exist (it is written beside the checkpoints)", file=sys.stderr)
        return 2
    plot(load_runs([Path(p) for p in paths]), Path(out))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
