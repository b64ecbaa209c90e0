"""Callbacks of this package (registered for YAML use)."""

from vlmo_composer import registry
from vlmo_composer.callbacks.elastic import RunShape
from vlmo_composer.callbacks.metric_dicts import FlattenMetricDicts
from vlmo_composer.callbacks.provenance import DataProvenance
from vlmo_composer.callbacks.preemption import Preempted, PreemptionCheckpoint
from vlmo_composer.callbacks.resume import MidEpochRngRestore
from vlmo_composer.callbacks.sample_order import SampleOrderLogger

registry.callbacks.register("sample_order_logger", SampleOrderLogger)

__all__ = [
    "DataProvenance",
    "FlattenMetricDicts",
    "MidEpochRngRestore",
    "Preempted",
    "PreemptionCheckpoint",
    "RunShape",
    "SampleOrderLogger",
]
