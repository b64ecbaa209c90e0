"""What a training run tells its user: console lines, per-loader metrics, resume/load lines, metrics.jsonl, curves."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from vlmo_composer.training.train import main as train_main

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "yamls" / "quickstart.yaml"
LOSS_TERMS = ("total", "itc", "itm", "mlm")


def quickstart_with_dev_loader(tmp: Path) -> str:
    """The shipped quick-start YAML plus a second eval loader (``dev`` on the val split)."""
    cfg = OmegaConf.load(QUICKSTART)
    dev = OmegaConf.to_container(cfg.eval_loaders[0])
    dev["label"] = "dev"
    dev["dataset"]["local"] = "${variables.data}/image_text/val"
    cfg.eval_loaders = [dev, OmegaConf.to_container(cfg.eval_loaders[0])]
    path = tmp / "quickstart_dev_test.yaml"
    OmegaConf.save(cfg, path)
    return str(path)


@pytest.fixture(scope="module")
def quick_run(synthetic_data, tmp_path_factory):
    """Two steps of the quick-start (evaluated after each), then a resume to step 3 and a weights-only load
    (those two without evaluation)."""
    tmp = tmp_path_factory.mktemp("quick_run")
    yaml = quickstart_with_dev_loader(tmp)
    common = [f"variables.data={synthetic_data}", "global_train_batch_size=8", "train_loader.num_workers=0",
              "callbacks.speed_monitor.window_size=1"]
    loggers = [f"loggers.tensorboard.log_dir={tmp}/tb"] if _has_tensorboard() else []
    checkpoint = tmp / "ckpt" / "latest-rank0.pt"
    runs = {
        "first": [*loggers, "max_duration=2ba", "eval_interval=1ba", "save_interval=2ba", f"save_folder={tmp}/ckpt"],
        "resumed": ["max_duration=3ba", "eval_loaders=[]", "save_interval=3ba", f"save_folder={tmp}/resumed",
                    f"load_path={checkpoint}"],
        "weights": ["max_duration=1ba", "eval_loaders=[]", "save_interval=1ba", f"save_folder={tmp}/weights",
                    f"load_path={checkpoint}", "load_weights_only=true", "load_strict_model_weights=false",
                    "load_ignore_keys=[state/model/model.mlm_score*]"],
    }
    results = {}
    for name, overrides in runs.items():
        log = tmp / f"{name}.log"
        with console_to(log):
            rc = train_main([yaml, *common, *overrides])
        results[name] = rc, log.read_text()
    return tmp, results


@contextlib.contextmanager
def console_to(path: Path):
    """Everything the run prints (Python streams and file descriptors 1 and 2) into ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved_fds = os.dup(1), os.dup(2)
    saved_streams = sys.stdout, sys.stderr
    with open(path, "w", buffering=1) as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        sys.stdout = sys.stderr = fh
        try:
            yield
        finally:
            fh.flush()
            sys.stdout, sys.stderr = saved_streams
            os.dup2(saved_fds[0], 1)
            os.dup2(saved_fds[1], 2)
            os.close(saved_fds[0])
            os.close(saved_fds[1])


def _has_tensorboard() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def test_console_shows_every_loss_term_lr_and_throughput(quick_run):
    _, runs = quick_run
    rc, out = runs["first"]
    assert rc == 0, out
    for term in LOSS_TERMS:
        assert re.search(rf"\b{term}[=: ]\s*\d+\.\d+", out), (term, out)
    lrs = [v for v in re.findall(r"\blr[=: ]\s*([0-9.]+(?:e[-+]?\d+)?)", out)]
    assert any(float(lr) > 0 for lr in lrs), out  # warm-up starts at 0, then 1.667e-05: not 0.0000
    assert "0.0000" not in lrs, out
    assert re.search(r"samples/s[=: ]\s*\d", out), out


def test_dict_metrics_are_printed_once_per_loader_as_labelled_scalars(quick_run):
    _, runs = quick_run
    out = runs["first"][1]
    for label in ("dev", "test"):
        lines = [line for line in out.splitlines() if re.search(rf"\beval {label} @ batch \d+: ", line)]
        assert len(lines) == 2, (label, out)  # evaluated after step 1 and step 2
        assert all("tr_r1" in line and "ir_r10" in line and "{" not in line for line in lines), lines


def test_resume_and_weight_loading_are_reported(quick_run):
    tmp, runs = quick_run
    rc, out = runs["resumed"]
    assert rc == 0, out
    checkpoint = str(tmp / "ckpt" / "latest-rank0.pt")
    # Lines of their own, not glued to the progress bar the resumed run already has open.
    assert re.search(rf"^resumed run \S+ from {re.escape(checkpoint)}.* batch 2", out, re.M), out
    assert re.search(r"^run \S+: 1 step in this process.*3 of 3ba", out, re.M), out
    rc, out = runs["weights"]
    assert rc == 0, out
    assert re.search(rf"loaded weights from {re.escape(checkpoint)}", out), out
    assert "mlm_score" in out and "missing" in out, out


def test_metrics_file_beside_the_checkpoints(quick_run):
    tmp, _ = quick_run
    records = [json.loads(line) for line in (tmp / "ckpt" / "metrics.jsonl").read_text().splitlines()]
    by_batch = {}
    for record in records:
        by_batch.setdefault(record["batch"], {}).update(record)
    assert sorted(by_batch) == [1, 2]
    for batch in (1, 2):
        for term in LOSS_TERMS:
            assert f"loss/train/{term}" in by_batch[batch]
    assert any(k.startswith("lr-") and v > 0 for k, v in by_batch[2].items())
    for label in ("dev", "test"):
        key = f"metrics/{label}/RetrievalRecall/tr_r1"
        assert sum(key in r for r in records) == 2, key  # once per evaluation, never re-logged for another loader
    assert not any(isinstance(v, dict) for r in records for v in r.values())


def test_curves_picture_from_the_metrics_file(quick_run):
    from vlmo_composer.training.curves import main as curves

    tmp, _ = quick_run
    out = tmp / "curves.png"
    assert curves([str(tmp / "ckpt" / "metrics.jsonl"), str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tensorboard_gets_flat_scalars(quick_run):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tmp, _ = quick_run
    events = [p.parent for p in (tmp / "tb").rglob("events.out.tfevents.*")]
    assert events
    tags = set()
    for directory in events:
        acc = EventAccumulator(str(directory))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"metrics/dev/RetrievalRecall/tr_r1", "metrics/test/RetrievalRecall/tr_r1", "loss/train/itc"} <= tags, tags
