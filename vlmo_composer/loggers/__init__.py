"""Logger destinations of this package: readable console output, metrics.jsonl, dict-safe scalar loggers."""

from vlmo_composer.loggers.console import ReadableConsoleLogger, ReadableProgressBar, print_run_line
from vlmo_composer.loggers.metrics_file import MetricsFile, metrics_location

__all__ = ["MetricsFile", "ReadableConsoleLogger", "ReadableProgressBar", "metrics_location", "print_run_line"]
