"""Which weights the next stage reads from a run trained with EMA: the average by default, ``raw`` on request.

One real tiny run (high learning rate, 1-batch half life, so the two sets differ
clearly) is shared by every test; Composer's own EMA algorithm, still live in the
trainer, says what each set is.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from training.helpers import SMALL_MODEL, stage_config
from vlmo_composer.checkpoints.sources import (
    WEIGHT_SETS,
    check_weight_set,
    composer_model_weights,
    select_composer_weights,
)
from vlmo_composer.common.errors import ConfigError
from vlmo_composer.common.run_paths import latest_checkpoint
from vlmo_composer.tasks.base import InitFrom


def _vlmo(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ComposerModel state dict in VLMo keys (what every reader loads into ``task.model``)."""
    return {k[len("model."):]: v.detach().clone() for k, v in state.items() if k.startswith("model.")}


def _same(loaded: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> bool:
    return loaded.keys() == expected.keys() and all(torch.equal(loaded[k], expected[k]) for k in expected)


@pytest.fixture(scope="module")
def ema_run(synthetic_data, tmp_path_factory):
    """``(checkpoint, EMA weights, raw weights)`` of a 3-batch run with EMA, the sets taken from the trainer."""
    from vlmo_composer.training.train import build_trainer

    cfg = stage_config("vl_pretrain", synthetic_data, tmp_path_factory.mktemp("ema"), max_duration="3ba",
                       save_interval="3ba", optimizer={"name": "adamw", "lr": 5e-2},
                       algorithms={"ema": {"half_life": "1ba"}})
    trainer = build_trainer(cfg)
    trainer.fit()
    ema = next(a for a in trainer.state.algorithms if type(a).__name__ == "EMA")
    # Composer swapped the average in to save the last checkpoint and left it there.
    assert ema.ema_started and ema.ema_weights_active
    ema_weights = _vlmo(trainer.state.model.state_dict())
    raw_weights = _vlmo(ema.get_training_model(copy.deepcopy(trainer.state.model)).state_dict())
    trainer.close()
    return latest_checkpoint(cfg.save_folder, cfg.run_name), ema_weights, raw_weights


def test_the_run_has_two_different_sets(ema_run):
    _, ema_weights, raw_weights = ema_run
    differ = [k for k in ema_weights if not torch.equal(ema_weights[k], raw_weights[k])]
    assert len(differ) > len(ema_weights) // 2
    assert max((ema_weights[k] - raw_weights[k]).abs().max() for k in differ) > 1e-3


def test_default_reads_the_ema_weights_and_says_so(ema_run, capsys):
    path, ema_weights, _ = ema_run
    assert _same(composer_model_weights(path), ema_weights)
    assert f"weights: EMA (the run's exponential moving average; weights 'raw' for the training ones), from {path}" \
        in capsys.readouterr().err
    assert _same(composer_model_weights(path, "ema"), ema_weights)


def test_raw_reads_the_training_weights_and_says_so(ema_run, capsys):
    path, _, raw_weights = ema_run
    assert _same(composer_model_weights(path, "raw"), raw_weights)
    assert f"weights: raw training weights (not the EMA), from {path}" in capsys.readouterr().err


def test_a_checkpoint_saved_with_the_training_weights_active(ema_run):
    """Either set may be in state/model: ``ema_weights_active`` decides, not the position."""
    path, ema_weights, raw_weights = ema_run
    state = torch.load(path, map_location="cpu", weights_only=False)["state"]
    ema = dict(state["algorithms"])["EMA"]
    stored = ema["ema_model"]["named_parameters_dict"]
    for name in stored:  # swap the two sets, as Composer does between checkpoints
        stored[name], state["model"][name] = state["model"][name], stored[name]
    ema["ema_weights_active"] = False
    assert _same(_vlmo(select_composer_weights(state, path)[0]), ema_weights)
    assert _same(_vlmo(select_composer_weights(state, path, "raw")[0]), raw_weights)


def test_a_run_without_ema_gives_its_only_set(ema_run, tmp_path, capsys):
    path, ema_weights, _ = ema_run
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    checkpoint["state"]["algorithms"] = []
    plain = tmp_path / "no-ema.pt"
    torch.save(checkpoint, plain)
    assert _same(composer_model_weights(str(plain)), ema_weights)  # state/model, whatever it holds
    assert f"weights: raw (the run had no EMA), from {plain}" in capsys.readouterr().err
    assert _same(composer_model_weights(str(plain), "raw"), ema_weights)
    with pytest.raises(ValueError, match=f"{plain}: weights 'ema' asked for, but the run had no EMA"):
        composer_model_weights(str(plain), "ema")


def test_choices_are_checked_naming_them():
    with pytest.raises(ValueError, match=r"init_from.weights 'average' is not one of \('ema', 'raw'\)"):
        InitFrom(kind="composer", path="x.pt", weights="average")
    with pytest.raises(ValueError, match="init_from.weights 'raw' chooses .* the official source has one set"):
        InitFrom(kind="official", path="x.pt", weights="raw")
    with pytest.raises(ValueError, match="--weights-set 'ema' .* the safetensors source"):
        check_weight_set("safetensors", "ema", "--weights-set")
    from vlmo_composer.evaluation import args

    assert args.WEIGHT_SETS == WEIGHT_SETS  # eval.py parses before importing torch: its own copy


@pytest.mark.parametrize("values, message", [
    (["kind=composer", "weights=average"], r"init_from.weights 'average' is not one of \('ema', 'raw'\)"),
    (["kind=official", "weights=raw"], r"init_from.weights 'raw' chooses between the EMA and raw weights"),
])
def test_the_yaml_key_is_checked_at_validation(values, message):
    from vlmo_composer.training.builders import validate_config
    from vlmo_composer.training.config import load_config

    quickstart = Path(__file__).resolve().parents[2] / "yamls" / "quickstart.yaml"
    overrides = [f"task.init_from.{v}" for v in [*values, "path=x.pt"]]
    with pytest.raises(ConfigError, match=message):
        validate_config(load_config(str(quickstart), overrides))


def _task(init_from: dict):
    from vlmo_composer.training.builders import build_task

    return build_task({"name": "vl_pretrain", "model": dict(SMALL_MODEL), "init_from": init_from})


def test_init_from_takes_ema_unless_raw_is_named(ema_run):
    path, ema_weights, raw_weights = ema_run
    assert _same(_task({"kind": "composer", "path": path}).model.state_dict(), ema_weights)
    assert _same(_task({"kind": "composer", "path": path, "weights": "raw"}).model.state_dict(), raw_weights)
    with pytest.raises(ConfigError, match="init_from.weights 'last' is not one of"):
        _task({"kind": "composer", "path": path, "weights": "last"})


def test_eval_py_weights_set_flag(ema_run, capsys):
    from vlmo_composer.evaluation.args import parse_args
    from vlmo_composer.evaluation.cli import load_weights
    from vlmo_composer.evaluation.weights import chosen_weights

    path, ema_weights, raw_weights = ema_run
    for flags, expected, which in (([], ema_weights, "EMA"), (["--weights-set", "raw"], raw_weights, "raw")):
        args = parse_args(["run.yaml", "--weights", path, "--kind", "composer", *flags])
        task = _task(None)
        described, report = load_weights(task, *chosen_weights(args, None), args.weights_set)
        assert _same(task.model.state_dict(), expected)
        assert described.startswith(f"composer weights {path} (batch {report.batch}); weights: {which}")
        assert report.batch > 0 and "weights:" not in capsys.readouterr().err  # said once, in the summary
    with pytest.raises(SystemExit):
        parse_args(["run.yaml", "--weights-set", "mean"])


def test_from_pretrained_and_export_take_the_chosen_set(ema_run, tmp_path):
    from vlmo_composer.checkpoints.safetensors_io import load_safetensors
    from vlmo_composer.inference import VLMoInference

    path, ema_weights, raw_weights = ema_run
    config = _task(None).model.config
    assert _same(VLMoInference.from_pretrained(path, kind="composer", size=config).model.state_dict(), ema_weights)
    raw = VLMoInference.from_pretrained(path, kind="composer", size=config, weights="raw")
    assert _same(raw.model.state_dict(), raw_weights)
    assert _same(load_safetensors(str(raw.export(tmp_path / "raw"))).state_dict(), raw_weights)
