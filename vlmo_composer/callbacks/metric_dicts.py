"""Log dictionary-valued metrics (e.g. TR@1..IR@10) as one scalar per key."""

from __future__ import annotations

from typing import Any, Mapping

from composer.core import Callback, State
from composer.loggers import Logger


def flat_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``{"metrics/test/RetrievalRecall": {"tr_r1": x}}`` -> ``{"metrics/test/RetrievalRecall/tr_r1": x}``."""
    flat: dict[str, Any] = {}
    for name, value in metrics.items():
        if isinstance(value, Mapping):
            flat.update(flat_metrics({f"{name}/{k}": v for k, v in value.items()}))
        else:
            flat[name] = value
    return flat


def current_eval_metrics(state: State) -> dict[str, Any]:
    """The metrics the loader being evaluated just computed, as ``metrics/<label>/<name>[/<key>]`` scalars.

    ``state.eval_metric_values`` is keyed by metric name only, so at a loader's
    EVAL_END it holds that loader's values; other loaders' entries are stale.
    """
    label = state.dataloader_label
    names = state.eval_metrics.get(label, {})
    return flat_metrics({f"metrics/{label}/{n}": state.eval_metric_values[n] for n in names
                         if n in state.eval_metric_values})


class FlattenMetricDicts(Callback):
    """Composer logs a metric's ``compute()`` value as is; scalar loggers (TensorBoard,
    MLflow) cannot take a dict, so each entry of the loader just evaluated is logged
    again as ``metrics/<label>/<metric>/<key>``. ``last_values`` keeps each loader's
    latest scalars for the end-of-run summary."""

    def __init__(self) -> None:
        self.last_values: dict[str, dict[str, Any]] = {}

    def eval_end(self, state: State, logger: Logger) -> None:
        self.last_values[state.dataloader_label] = current_eval_metrics(state)
        values = state.eval_metric_values
        label = state.dataloader_label
        dict_valued = [n for n in state.eval_metrics.get(label, {}) if isinstance(values.get(n), Mapping)]
        if dict_valued:
            logger.log_metrics(flat_metrics({f"metrics/{label}/{n}": values[n] for n in dict_valued}))
