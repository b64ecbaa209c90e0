"""Console output a person can read: every loss term, lr, throughput, and one line per evaluation.

Composer's own progress bar shows only ``loss/train/*`` (truncated at 120
columns when not on a terminal), its console logger prints every value as
``{:.4f}`` (a learning rate of 2e-5 reads ``0.0000``) and both print dict-valued
metrics as dicts. These subclasses keep Composer's behaviour otherwise.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping, Optional, TextIO

from composer.core import State
from composer.loggers import ConsoleLogger, Logger, ProgressBarLogger

from vlmo_composer.callbacks.metric_dicts import flat_metrics


def format_number(value: Any) -> str:
    """4 decimals in the usual range, scientific notation outside it (so 2e-5 is not 0.0000)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    if value == 0 or value != value:
        return f"{value:g}"
    return f"{value:.4f}" if 1e-3 <= abs(value) < 1e5 else f"{value:.3e}"


def short_train_name(name: str) -> Optional[str]:
    """The console label of a training value, or None for values the console leaves to the loggers."""
    if name.startswith("loss/train/"):
        return name[len("loss/train/"):]
    if name.startswith("lr-") and name.endswith("/group0"):
        return "lr"
    return {"throughput/samples_per_sec": "samples/s", "throughput/device/mfu": "mfu"}.get(name)


def train_values(metrics: Mapping[str, Any]) -> dict[str, str]:
    shown = {}
    for name, value in metrics.items():
        label = short_train_name(name)
        if label is not None and not isinstance(value, Mapping):
            shown[label] = format_number(value)
    return shown


def eval_line(state: State) -> str:
    """``eval dev @ batch 120: RetrievalRecall: tr_r1 0.1100, ...`` for the loader just evaluated."""
    label = state.dataloader_label
    parts = []
    for name in state.eval_metrics.get(label, {}):
        value = state.eval_metric_values.get(name)
        if isinstance(value, Mapping):
            parts.append(f"{name}: " + ", ".join(f"{k} {format_number(v)}" for k, v in flat_metrics(value).items()))
        elif value is not None:
            parts.append(f"{name} {format_number(value)}")
    return f"eval {label} @ batch {int(state.timestamp.batch)}: " + "; ".join(parts)


class ReadableProgressBar(ProgressBarLogger):
    """Composer's progress bar with every loss term, lr and throughput, flat eval metrics, full-width lines."""

    def __init__(self, stream: str = "stderr") -> None:
        super().__init__(stream=stream)  # resolved now, not when Composer was imported

    def log_metrics(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        if self.eval_pbar is not None:
            label = self.state.dataloader_label if self.state is not None else ""
            prefix = f"metrics/{label}/"
            shown = {k[len(prefix):].split("/")[-1]: format_number(v)
                     for k, v in flat_metrics(metrics).items() if k.startswith(prefix)}
            bar = self.eval_pbar
        else:
            shown, bar = train_values(metrics), self.train_pbar
        if bar is not None and shown:
            bar.metrics.update(shown)
            bar.pbar.set_postfix(bar.metrics, refresh=False)  # one line per batch when not on a terminal

    def _build_pbar(self, state: State, is_train: bool):
        bar = super()._build_pbar(state, is_train)
        if not _is_terminal(self.stream):
            bar.pbar.ncols = None  # a log file gets the whole line, not 120 columns
        return bar

    def eval_end(self, state: State, logger: Logger) -> None:
        if self.show_pbar:
            self._log_to_console(eval_line(state))
        super().eval_end(state, logger)

    def _log_to_console(self, log_str: str) -> None:
        if _is_terminal(self.stream):
            super()._log_to_console(log_str)  # tqdm.write keeps the bars below the line
        else:
            print("\n" + log_str, file=self.stream, flush=True)  # a log file: a line of its own


class ReadableConsoleLogger(ConsoleLogger):
    """One line per logging interval (``log_to_console: true``): losses, lr, throughput; one per evaluation."""

    def __init__(self, log_interval: str | int = "1ba", stream: str = "stderr") -> None:
        super().__init__(log_interval=log_interval, stream=stream)

    def log_to_console(self, data: dict[str, Any], state: State, prefix: str = "", is_train: bool = True) -> None:
        if not is_train:
            return  # eval progress: eval_end prints the results
        values = " ".join(f"{k} {v}" for k, v in train_values(data).items())
        self._log_to_console(f"{self._get_progress_string(state)} {values}".rstrip())

    def eval_end(self, state: State, logger: Logger) -> None:
        self._log_to_console(eval_line(state))
        self.logged_metrics = {}


def print_run_line(text: str, file: Optional[TextIO] = None) -> None:
    """A run-level line (resumed from, interrupted, the summary) on a line of its own.

    A progress bar may be open on stderr with its line unfinished (a resumed run's
    bar exists before ``fit``): on a terminal ``tqdm.write`` clears the bars, prints
    and redraws them; in a log file the bars' line is ended first.
    """
    from tqdm.std import tqdm

    file = file or sys.stdout
    bars = [bar for bar in list(tqdm._instances) if not getattr(bar, "disable", False)]
    if bars and _is_terminal(file):
        tqdm.write(text, file=file)
        file.flush()
        return
    for stream in {id(bar.fp): bar.fp for bar in bars}.values():
        stream.write("\n")
        stream.flush()
    print(text, file=file, flush=True)


def _is_terminal(stream: Any) -> bool:
    try:
        return os.isatty(stream.fileno())
    except (AttributeError, ValueError, OSError):
        return False
