"""`train.py --dry-run` / `eval.py --dry-run`: everything checked and counted, nothing trained."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import boto3
import torch
from omegaconf import OmegaConf

from vlmo_composer import registry
from vlmo_composer.training import builders
from vlmo_composer.training.builders import import_code_paths, validate_config
from vlmo_composer.training.config import load_config
from vlmo_composer.evaluation.cli import main as eval_main
from vlmo_composer.model import VLMo
from vlmo_composer.training.train import main as train_main

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "yamls" / "quickstart.yaml")


def shard_samples(split_dir: Path) -> int:
    """Samples in a split as its MDS index.json counts them."""
    return sum(shard["samples"] for shard in json.loads((split_dir / "index.json").read_text())["shards"])


def model_parameters(overrides: list[str]) -> int:
    return VLMo(validate_config(load_config(QUICKSTART, overrides))).num_parameters()


def test_train_dry_run_counts_streams_parameters_and_steps(capsys, synthetic_data, tmp_path):
    overrides = [f"variables.data={synthetic_data}", "global_train_batch_size=8", f"save_folder={tmp_path}/ckpt"]
    assert train_main([QUICKSTART, "--dry-run", *overrides]) == 0
    out = capsys.readouterr().out
    train_n = shard_samples(synthetic_data / "image_text/train")
    test_n = shard_samples(synthetic_data / "image_text/test")
    assert f"{synthetic_data}/image_text/train: {train_n} samples" in out, out
    assert f"{synthetic_data}/image_text/test: {test_n} samples" in out, out
    assert f"{model_parameters(overrides):,} parameters" in out, out
    assert "global 8, device 8 on 1 rank" in out, out
    batches_per_epoch = train_n // 8
    assert f"max_duration 3ep = {3 * batches_per_epoch} batches ({batches_per_epoch} per epoch)" in out, out
    assert re.search(r"[0-9.]+ GFLOP per training sample", out), out
    assert f"checkpoints: {tmp_path}/ckpt" in out, out
    assert "nothing trained" in out
    assert not (tmp_path / "ckpt").exists()


def test_dry_run_catches_data_model_disagreement_and_empty_epochs(capsys, synthetic_data):
    data = f"variables.data={synthetic_data}"
    assert train_main([QUICKSTART, "--dry-run", data, "train_loader.dataset.image_size=32"]) == 2
    err = capsys.readouterr().err
    assert "train_loader.dataset.image_size" in err and "task.model.image_size" in err, err
    # 48 samples cannot make one batch of 64
    assert train_main([QUICKSTART, "--dry-run", data, "global_train_batch_size=64"]) == 2
    err = capsys.readouterr().err
    assert "global_train_batch_size=64" in err and "48" in err, err


def test_train_and_dry_run_refuse_a_too_long_text_length_alike(capsys, synthetic_data):
    """One shape rule (builders.derive_loader_shapes) for both: the same one-line error, exit 2."""
    too_long = ["train_loader.dataset.max_text_len=33"]  # the quick-start model reads 32 tokens
    errors = []
    for mode in (["--dry-run"], []):
        assert train_main([QUICKSTART, *mode, f"variables.data={synthetic_data}", *too_long]) == 2
        errors.append(capsys.readouterr().err)
    assert errors[0] == errors[1], errors
    assert "train_loader.dataset.max_text_len=33 disagrees with task.model.max_text_len=32" in errors[0], errors


def test_dry_run_reads_only_the_index_on_s3(capsys, synthetic_data, s3_bucket):
    """Only index.json is uploaded: the counts come from it, no shard is fetched."""
    boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"]).upload_file(
        str(synthetic_data / "image_text/train/index.json"), s3_bucket, "syn/image_text/train/index.json")
    remote = f"s3://{s3_bucket}/syn/image_text/train"
    assert train_main([QUICKSTART, "--dry-run", f"variables.data={synthetic_data}", "global_train_batch_size=8",
                       "train_loader.dataset.local=null", f"train_loader.dataset.remote={remote}"]) == 0
    out = capsys.readouterr().out
    assert f"{remote}: {shard_samples(synthetic_data / 'image_text/train')} samples" in out, out


def test_dry_run_says_what_will_be_loaded(capsys, synthetic_data, tmp_path):
    stage = tmp_path / "stage2.pt"
    torch.save({"state": {"model": {}}}, stage)
    assert train_main([QUICKSTART, "--dry-run", f"variables.data={synthetic_data}", "global_train_batch_size=8",
                       f"load_path={stage}", "load_weights_only=true", "load_strict_model_weights=false"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"load_path: {re.escape(str(stage))} \(weights only", out), out


def test_eval_dry_run(capsys, synthetic_data):
    assert eval_main([QUICKSTART, f"variables.data={synthetic_data}", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"{synthetic_data}/image_text/test: {shard_samples(synthetic_data / 'image_text/test')} samples" in out
    assert f"{model_parameters([]):,} parameters" in out, out
    assert "latest-rank0.pt" in out and "nothing evaluated" in out, out


CODE_PATHS_CALLBACK = """\
from composer.core import Callback

from vlmo_composer import registry


class EveryN(Callback):
    def __init__(self, every: int = 1):
        self.every = every


registry.callbacks.register("dry_run_test_every_n", EveryN)
"""


def test_dry_run_with_a_code_paths_callback(capsys, synthetic_data, tmp_path, monkeypatch):
    """A ``code_paths:`` file that registers a callback the YAML uses: the dry runs (train, then a
    wrong key, then eval, in one process as the tests run the commands) run the file once."""
    monkeypatch.setattr(registry.callbacks, "_entries", dict(registry.callbacks._entries))
    monkeypatch.setattr(builders, "IMPORTED_CODE_PATHS", {})
    hooks = tmp_path / "my_callbacks.py"
    hooks.write_text(CODE_PATHS_CALLBACK)
    yaml = OmegaConf.load(QUICKSTART)
    yaml.code_paths = [str(hooks)]
    yaml.callbacks.dry_run_test_every_n = {"every": 2}
    run_yaml = tmp_path / "run.yaml"
    OmegaConf.save(yaml, run_yaml)
    data = f"variables.data={synthetic_data}"
    resolutions = []  # every resolve_config starts by importing the code paths
    monkeypatch.setattr(builders, "import_code_paths", lambda paths: resolutions.append(paths) or import_code_paths(paths))

    assert train_main([str(run_yaml), "--dry-run", data, "global_train_batch_size=8"]) == 0
    captured = capsys.readouterr()
    assert "nothing trained" in captured.out and "already registered" not in captured.err, captured
    assert len(resolutions) == 1, "the dry run resolves the config once"
    # The registered callback's arguments are checked like a built-in one's.
    assert train_main([str(run_yaml), "--dry-run", data, "callbacks.dry_run_test_every_n.evry=3"]) == 2
    err = capsys.readouterr().err
    assert "callbacks.dry_run_test_every_n.evry" in err and "every" in err, err
    assert eval_main([str(run_yaml), data, "--dry-run"]) == 0
    assert "nothing evaluated" in capsys.readouterr().out
    # The same file by another path (a symlink) is the same import.
    (tmp_path / "link.py").symlink_to(hooks)
    import_code_paths([str(tmp_path / "link.py"), str(hooks)])
    assert list(builders.IMPORTED_CODE_PATHS) == [str(hooks.resolve())]


def test_dry_run_of_a_stage_before_the_one_it_loads_warns_and_checks_the_rest(capsys, synthetic_data, tmp_path):
    """The README's trial, vl_base checked before text_base has run: one warning line naming the YAML that
    writes the checkpoint, the rest checked; training itself stops in one line naming the path."""
    from training.test_recipes import trial_commands

    (tmp_path / "mds").symlink_to(synthetic_data)  # a root whose runs/ is empty
    _, trial = trial_commands()
    trial = [f"variables.root={tmp_path}" if o.startswith("variables.root=") else o for o in trial]
    stage2 = tmp_path / "runs" / "vlmo-base-stage2-text" / "checkpoints" / "latest-rank0.pt"
    vl_base = str(ROOT / "yamls" / "pretrain" / "vl_base.yaml")
    assert train_main([vl_base, "--dry-run", *trial]) == 0
    out = capsys.readouterr().out
    (warning,) = [line for line in out.splitlines() if line.startswith("warning:")]
    assert warning.startswith(f"warning: load_path: checkpoint {stage2} does not exist yet; "), warning
    assert os.path.join("yamls", "pretrain", "text_base.yaml") in warning, warning
    assert "microbatch 2" in out and "nothing trained" in out, out
    finetune = str(ROOT / "yamls" / "finetune" / "vqa_base.yaml")
    assert train_main([finetune, "--dry-run", *trial]) == 0
    (warning,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert warning.startswith("warning: task.init_from.path: checkpoint ") and "vl_base.yaml writes it" in warning

    assert train_main([vl_base, *trial]) == 2
    (error,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert error == f"config error: load_path: checkpoint {stage2} does not exist", error


def test_dry_run_flags_a_microbatch_larger_than_the_device_batch(capsys, synthetic_data, tmp_path):
    assert train_main([str(ROOT / "yamls" / "pretrain" / "vision_base.yaml"), "--dry-run",
                       f"variables.root={synthetic_data.parent}", "task.model.size=small",
                       "global_train_batch_size=2"]) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: device_train_microbatch_size=64 is larger than the device batch 2 "
                        "(global_train_batch_size=2 on 1 rank(s)): each step is one microbatch of 2; "
                        "set device_train_microbatch_size=2"], warnings
