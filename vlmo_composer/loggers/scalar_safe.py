"""Composer's TensorBoard, MLflow and WandB loggers without dict-valued metrics.

Composer logs a metric's ``compute()`` value as is; a dict (retrieval recall's
TR@1..IR@10) crashes TensorBoard's ``add_hparams`` at the first evaluation and
MLflow's ``float()``. :class:`~vlmo_composer.callbacks.FlattenMetricDicts` logs
every entry again as a scalar, so these loggers simply drop the dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

from composer import loggers


def scalars_only(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if not isinstance(v, Mapping)}


class TensorboardLogger(loggers.TensorboardLogger):
    def log_metrics(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        super().log_metrics(scalars_only(metrics), step)


class MLFlowLogger(loggers.MLFlowLogger):
    def log_metrics(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        super().log_metrics(scalars_only(metrics), step)


class WandBLogger(loggers.WandBLogger):
    def log_metrics(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        super().log_metrics(scalars_only(metrics), step)
