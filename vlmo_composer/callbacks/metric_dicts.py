"""Log dictionary-valued metrics (e.g. TR@1..IR@10) as one scalar per key."""

from __future__ import annotations

from composer.core import Callback, State
from composer.loggers import Logger


class FlattenMetricDicts(Callback):
    """Composer logs a metric's ``compute()`` value as is; scalar loggers (TensorBoard,
    MLflow) cannot take a dict, so each entry is logged again as
    ``metrics/<label>/<metric>/<key>``."""

    def eval_end(self, state: State, logger: Logger) -> None:
        for label, metrics in state.eval_metrics.items():
            for name, metric in metrics.items():
                value = state.eval_metric_values.get(name)
                if isinstance(value, dict):
                    logger.log_metrics({f"metrics/{label}/{name}/{k}": float(v) for k, v in value.items()})
