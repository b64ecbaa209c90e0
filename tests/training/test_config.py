"""The YAML schema: strict keys with valid choices, typed values, overrides, every shipped YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlmo_composer.training.builders import resolve_task, validate_config
from vlmo_composer.training.config import ConfigError, load_config
from vlmo_composer.model import VLMo
from vlmo_composer.training.train import main

ROOT = Path(__file__).resolve().parents[2]
YAMLS = sorted((ROOT / "yamls").rglob("*.yaml"))
QUICKSTART = ROOT / "yamls" / "quickstart.yaml"


def test_there_are_yamls_for_every_stage_and_fine_tune():
    names = {p.relative_to(ROOT / "yamls").as_posix() for p in YAMLS}
    expected = {
        "quickstart.yaml",
        "pretrain/vision_base.yaml", "pretrain/text_base.yaml", "pretrain/vl_base.yaml",
        "pretrain/vl_large.yaml", "pretrain/vl_large_web.yaml",
    }
    assert expected <= names


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.relative_to(ROOT / "yamls").as_posix())
def test_every_yaml_validates_and_its_model_builds_on_meta(path, synthetic_data):
    # Validation reads the VQA answer vocabulary, so the YAMLs point at the synthetic data (README trial).
    cfg = load_config(str(path), [f"variables.root={synthetic_data.parent}"] if path.name != "quickstart.yaml" else [])
    model_config = validate_config(cfg)
    with torch.device("meta"):
        model = VLMo(model_config)
    assert model.num_parameters() > 0
    assert resolve_task(cfg.task).task_class.__name__.endswith("Task")


def test_large_yaml_uses_fsdp_activation_checkpointing_and_bf16():
    cfg = load_config(str(ROOT / "yamls/pretrain/vl_large.yaml"))
    assert cfg.precision == "amp_bf16"
    fsdp = cfg.parallelism_config["fsdp"]
    assert fsdp["sharding_strategy"] == "SHARD_GRAD_OP" and fsdp["activation_checkpointing"] is False
    assert cfg.task["model"]["checkpoint_policy"] == "selective" and cfg.task["model"]["activation_checkpointing"]
    assert cfg.task["init_device"] == "meta"
    assert validate_config(cfg).name == "large"


@pytest.mark.parametrize(
    "override,message",
    [
        ("optimzer.lr=1", r"unknown key optimzer; valid keys at <root>: \[.*'optimizer'"),
        ("task.mlm_wieght=1", r"unknown key task.mlm_wieght; valid keys at task: \[.*'mlm_weight'"),
        ("task.model.hiden_size=8", r"task.model: unknown VLMoConfig keys \['hiden_size'\]; valid keys"),
        ("task.model.size=huge", r"unknown VLMo size 'huge'; choose one of"),
        ("train_loader.dataset.imagesize=3", r"unknown keys \['train_loader.dataset.imagesize'\]; valid keys: \[.*'image_size'"),
        ("train_loader.num_workrs=3", r"unknown key train_loader.num_workrs; valid keys at train_loader"),
        ("optimizer.beta=[0.9,0.9]", r"unknown keys \['optimizer.beta'\]; valid keys: \[.*'betas'"),
        ("scheduler.t_warmpu=1ba", r"unknown keys \['scheduler.t_warmpu'\]; valid keys"),
        ("callbacks.speed_monitor.windowsize=3", r"unknown keys \['callbacks.speed_monitor.windowsize'\]"),
        ("callbacks.speedmonitor={}", r"callbacks.speedmonitor: unknown callback 'speedmonitor'; registered: \["),
        ("algorithms.gradient_clipping.clip=1", r"unknown keys \['algorithms.gradient_clipping.clip'\]"),
        ("task.name=vl_pretrian", r"task.name: unknown task 'vl_pretrian'; registered: \["),
        ("train_loader.name=imagetext", r"train_loader.name: unknown dataloader 'imagetext'"),
        ("global_train_batch_size=many", r"global_train_batch_size: expected an integer, got 'many'"),
        ("task.mlm_weight=high", r"task.mlm_weight: expected a number, got 'high'"),
        ("progress_bar=3", r"progress_bar: expected true/false, got 3"),
        ("task.init_from.kind=clip", r"init_from.kind 'clip' is not one of"),
        ("autoresume=true", r"autoresume needs run_name and save_folder"),
    ],
)
def test_bad_keys_and_values_name_the_key(override, message):
    overrides = [override]
    if override.startswith("task.init_from"):
        overrides.append("task.init_from.path=x.pt")
    if override.startswith("autoresume"):
        overrides.append("save_folder=null")
    with pytest.raises(ConfigError, match=message):
        validate_config(load_config(str(QUICKSTART), overrides))


def test_overrides_and_variables_resolve():
    cfg = load_config(str(QUICKSTART), ["optimizer.lr=1e-4", "variables.image_size=32", "max_duration=3ba"])
    assert cfg.optimizer["lr"] == 1e-4
    assert validate_config(cfg).image_size == 32  # through ${variables.image_size} to the model that owns it
    assert cfg.train_loader.dataset["image_size"] == 32  # and from there to the loaders
    assert cfg.max_duration == "3ba"
    with pytest.raises(ConfigError, match="overrides must look like key.path=value"):
        load_config(str(QUICKSTART), ["+optimizer.lr"])


def test_command_line_fails_before_training_with_the_key(capsys):
    assert main([str(QUICKSTART), "optimizer.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert "config error" in err and "optimizer.lrr" in err and "'lr'" in err


def test_the_latest_pointer_is_polled_every_latest_poll_seconds(tmp_path):
    """Composer polls for a checkpoint's arrival every 30 s before uploading ``latest``; ours is
    ``object_store.latest_poll_seconds`` (a private CheckpointSaver attribute: fails loudly if it goes)."""
    from composer.callbacks import CheckpointSaver

    from vlmo_composer.training.object_store import LATEST_POLL_ATTRIBUTE, ObjectStoreConfig, configure_checkpoint_uploads

    saver = CheckpointSaver(folder=str(tmp_path))
    assert getattr(saver, LATEST_POLL_ATTRIBUTE) == 30.0  # Composer's default
    configure_checkpoint_uploads(saver, ObjectStoreConfig())
    assert getattr(saver, LATEST_POLL_ATTRIBUTE) == 2.0
    configure_checkpoint_uploads(saver, ObjectStoreConfig(latest_poll_seconds=0.5))
    assert getattr(saver, LATEST_POLL_ATTRIBUTE) == 0.5


def test_checkpoint_uploads_run_in_threads_with_the_retry_policy(monkeypatch):
    """Composer's checkpoint uploader spawns processes that re-import torch and Composer; ours
    runs the same upload and arrival-poll functions in threads (private members: fails loudly)."""
    from concurrent.futures import ThreadPoolExecutor

    from composer.callbacks import CheckpointSaver

    from vlmo_composer.training.object_store import ObjectStoreConfig, configure_checkpoint_uploads

    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)  # an in-process run before this one exports it
    saver = CheckpointSaver(folder="s3://a-bucket/runs/{run_name}/checkpoints")
    uploader = saver.remote_uploader
    try:
        configure_checkpoint_uploads(saver, ObjectStoreConfig(max_attempts=3))
        assert isinstance(uploader.upload_executor, ThreadPoolExecutor)
        assert isinstance(uploader.check_remote_files_exist_executor, ThreadPoolExecutor)
        assert not uploader.is_remote_upload_failed.is_set()
        assert uploader.backend_kwargs["client_config"]["retries"]["total_max_attempts"] == 3
    finally:
        uploader.wait_and_close()

