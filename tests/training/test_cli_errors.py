"""Bad input through the real entry points: exit code 2, one or two lines naming the key or file, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vlmo_composer.checkpoints.official import save_official
from vlmo_composer.evaluation.cli import main as eval_main
from vlmo_composer.model import VLMo, VLMoConfig
from vlmo_composer.training.train import main as train_main

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "yamls" / "quickstart.yaml")


def assert_short_error(rc: int, err: str, *names: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert rc == 2, err
    assert "Traceback" not in err, err
    assert 1 <= len(lines) <= 2, err
    for name in names:
        assert name in err, (name, err)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    """A text file posing as a checkpoint, a torch file cut short, and a VLMo-tiny official file."""
    root = tmp_path_factory.mktemp("bad_checkpoints")
    garbage = root / "garbage.pt"
    garbage.write_text("not a checkpoint\n")
    whole = root / "whole.pt"
    torch.save({"state": {"model": {"model.x": torch.zeros(1000)}}}, whole)
    truncated = root / "truncated.pt"
    truncated.write_bytes(whole.read_bytes()[:2000])
    tiny = root / "vlmo_tiny_official.pt"
    save_official(VLMo(VLMoConfig.named("tiny")), tiny)
    return {"garbage": garbage, "truncated": truncated, "tiny": tiny}


@pytest.fixture
def no_s3_credentials(monkeypatch, tmp_path):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "S3_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def train(capsys, data: Path, *overrides: str) -> tuple[int, str]:
    rc = train_main([QUICKSTART, f"variables.data={data}", "max_duration=1ba", "global_train_batch_size=8",
                     "progress_bar=false", *overrides])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize(
    "override,names",
    [
        ("optimizer.lr=5e-4x", ["optimizer.lr", "5e-4x"]),
        ("max_duration=3epochs", ["max_duration", "3epochs", "'ep'", "'ba'"]),
        ("max_duration=0ba", ["max_duration", "positive"]),
        ("eval_interval=-1ep", ["eval_interval", "positive"]),
        ("precision=fp16", ["precision", "fp16", "amp_bf16", "fp32"]),
        ("precision=amp_bf16", ["precision", "amp_bf16", "cpu", "fp32"]),  # the quick-start runs on device: cpu
        ("device=tpux", ["device", "tpux", "cpu", "gpu"]),
    ],
)
def test_bad_values_fail_in_one_line(capsys, synthetic_data, override, names):
    assert_short_error(*train(capsys, synthetic_data, override), *names)


@pytest.mark.parametrize("which", ["garbage", "truncated"])
@pytest.mark.parametrize("key", ["load_path", "init_from_composer", "init_from_official"])
def test_unreadable_checkpoints_name_the_file(capsys, synthetic_data, bad_files, key, which):
    path = bad_files[which]
    overrides = {
        "load_path": [f"load_path={path}"],
        "init_from_composer": ["task.init_from.kind=composer", f"task.init_from.path={path}"],
        "init_from_official": ["task.init_from.kind=official", f"task.init_from.path={path}"],
    }[key]
    assert_short_error(*train(capsys, synthetic_data, *overrides), str(path))


def test_official_checkpoint_of_another_size_says_which_size(capsys, synthetic_data, bad_files):
    rc, err = train(capsys, synthetic_data, "task.init_from.kind=official", f"task.init_from.path={bad_files['tiny']}")
    assert_short_error(rc, err, str(bad_files["tiny"]), "tiny", "small")


@pytest.mark.parametrize(
    "overrides",
    [
        ["train_loader.dataset.local=null", "train_loader.dataset.remote=s3://ux-no-creds/image_text/train"],
        ["load_path=s3://ux-no-creds/runs/stage2/latest-rank0.pt"],
        ["save_folder=s3://ux-no-creds/runs/{run_name}"],
    ],
    ids=["remote", "load_path", "save_folder"],
)
def test_s3_without_credentials_names_bucket_and_variables(capsys, synthetic_data, no_s3_credentials, overrides):
    rc, err = train(capsys, synthetic_data, *overrides)
    assert_short_error(rc, err, "ux-no-creds", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "S3_ENDPOINT_URL")


def test_eval_with_unreadable_or_wrong_size_checkpoint(capsys, synthetic_data, bad_files):
    data = f"variables.data={synthetic_data}"
    assert_short_error(eval_main([QUICKSTART, data, "--checkpoint", str(bad_files["truncated"])]),
                       capsys.readouterr().err, str(bad_files["truncated"]))
    assert_short_error(eval_main([QUICKSTART, data, "--official", str(bad_files["tiny"])]),
                       capsys.readouterr().err, str(bad_files["tiny"]), "tiny")


def test_the_composer_launcher_keeps_exit_code_and_message(synthetic_data, tmp_path):
    """`composer -n 1 train.py ...` runs train.py in a child process: its exit code and message must come through."""
    composer = Path(sys.executable).parent / "composer"
    result = subprocess.run(
        [str(composer), "-n", "1", str(ROOT / "train.py"), QUICKSTART, f"variables.data={synthetic_data}",
         "optimizer.lr=5e-4x"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "optimizer.lr" in output and "5e-4x" in output, output
    assert "Traceback" not in output, output


HEAVY = ("torch", "composer", "streaming", "transformers")
RUN_SCRIPT = """\
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as stop:
    code = stop.code
print("heavy:", sorted(m for m in {heavy!r} if m in sys.modules), "exit:", code)
"""


@pytest.mark.parametrize(("argv", "code", "says"), [
    (["train.py", "--help"], 0, "--dry-run"),
    (["train.py", "missing.yaml", "optimizer.lr=1"], 2, "config error: missing.yaml does not exist"),
    (["eval.py", "--help"], 0, "--weights"),
    (["eval.py", "missing.yaml", "--rerank-k", "4"], 2, "eval error: missing.yaml does not exist"),
])
def test_help_and_a_missing_yaml_are_answered_before_torch(argv, code, says):
    """The entry points answer these without importing torch or Composer (bench/RESULTS.md has the time)."""
    done = subprocess.run([sys.executable, "-c", RUN_SCRIPT.format(heavy=HEAVY), *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().endswith(f"heavy: [] exit: {code}"), done.stdout[-2000:] + done.stderr[-2000:]
    assert says in done.stdout + done.stderr
    if argv[1] == "--help":
        assert "``" not in done.stdout and ":mod:" not in done.stdout  # plain text, not RST


def built_in_names(reg) -> list[str]:
    """The package's and Composer's entries, not those a test's code_paths file registered."""
    def module(entry) -> str:
        return entry.split(":")[0] if isinstance(entry, str) else entry.__module__

    return sorted(name for name, entry in reg._entries.items() if module(entry).split(".")[0] in ("vlmo_composer", "composer"))


def test_help_lists_every_top_level_key_and_registered_name(capsys):
    """--help's static lists (no import needed) match TrainConfig and the registries as filled
    by importing the training stack (this module imported train.py): add a key or register a
    component and this fails until training/usage.py says what it is."""
    import dataclasses

    from vlmo_composer import registry
    from vlmo_composer.training import usage
    from vlmo_composer.training.config import TrainConfig

    assert [name for name, _ in usage.TOP_LEVEL_KEYS] == [f.name for f in dataclasses.fields(TrainConfig)]
    sections = {"tasks": registry.tasks, "loaders": registry.dataloaders, "optimizers": registry.optimizers,
                "schedulers": registry.schedulers, "algorithms": registry.algorithms,
                "callbacks": registry.callbacks, "loggers": registry.loggers}
    listed = {section.split(" ")[0]: sorted(name for name, _ in rows) for section, rows in usage.REGISTERED.items()}
    assert listed == {section: built_in_names(reg) for section, reg in sections.items()}
    assert all(names for names in listed.values())
    assert train_main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, line in [*usage.TOP_LEVEL_KEYS, *(row for rows in usage.REGISTERED.values() for row in rows)]:
        assert any(text.split() == [name, *line.split()] for text in out.splitlines()), name


def test_train_main_answers_help_and_a_missing_yaml(capsys):
    assert train_main(["--help"]) == 0
    assert "key.path=value" in capsys.readouterr().out
    assert_short_error(train_main(["missing.yaml", "--dry-run"]), capsys.readouterr().err, "missing.yaml")
    assert_short_error(eval_main(["missing.yaml"]), capsys.readouterr().err, "missing.yaml")
