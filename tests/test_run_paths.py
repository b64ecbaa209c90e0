"""One rule for a run's folder: the train command, the dry run, the run report, eval.py and the metrics file."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlmo_composer.common.run_paths import latest_checkpoint, run_folder
from vlmo_composer.evaluation.weights import default_checkpoint
from vlmo_composer.loggers.metrics_file import metrics_location
from vlmo_composer.training.config import load_config

QUICKSTART = str(Path(__file__).resolve().parents[1] / "yamls" / "quickstart.yaml")


@pytest.mark.parametrize(("save_folder", "folder"), [
    ("runs/{run_name}/checkpoints", "runs/q/checkpoints"),
    ("runs/{run_name}/", "runs/q"),  # no trailing slash: files are joined with one '/'
    ("s3://bucket/{run_name}/ck/", "s3://bucket/q/ck"),
    ("/abs/fixed", "/abs/fixed"),
])
def test_run_folder(save_folder, folder):
    assert run_folder(save_folder, "q") == folder
    assert latest_checkpoint(save_folder, "q") == f"{folder}/latest-rank0.pt"
    assert metrics_location(save_folder, "q") == f"{folder}/metrics.jsonl"


def test_run_folder_fills_what_composer_fills():
    """``{rank}`` and friends too, as Composer's CheckpointSaver formats its folder (this process's values)."""
    from composer.utils import dist, format_name_with_dist

    template = "s3://b/{run_name}/r{rank}-of-{world_size}"
    expected = f"s3://b/q/r{dist.get_global_rank()}-of-{dist.get_world_size()}"
    assert run_folder(template, "q") == expected == format_name_with_dist(template, "q")
    assert latest_checkpoint("runs/{run_name}", "q", rank=3) == "runs/q/latest-rank3.pt"


def test_eval_default_weights_are_the_runs_latest_checkpoint():
    cfg = load_config(QUICKSTART, ["save_folder=runs/{run_name}/checkpoints/"])
    assert default_checkpoint(cfg) == "runs/quickstart/checkpoints/latest-rank0.pt"
    assert default_checkpoint(load_config(QUICKSTART, ["save_folder=null"])) is None
