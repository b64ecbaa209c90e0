"""One vocabulary of weight sources (checkpoints/sources.py): local and s3://, and the deprecated name."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
import torch
from inference.inference_helpers import TINY_SHAPE, randomised, tiny_config

from vlmo_composer import VLMo, VLMoInference
from vlmo_composer.checkpoints.sources import WEIGHT_KINDS, build_model, load_weights_into
from vlmo_composer.tasks.base import InitFrom


def same_weights(a: VLMo, b: VLMo) -> bool:
    return a.state_dict().keys() == b.state_dict().keys() and all(
        torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


@pytest.fixture(scope="module")
def tiny() -> VLMo:
    return randomised(VLMo(tiny_config()), seed=6)


@pytest.mark.s3
def test_every_kind_loads_from_s3_like_from_disk(tiny, tmp_path, s3_bucket):
    folder = VLMoInference(tiny).export(tmp_path / "export")
    official = tmp_path / "official.pt"
    torch.save({"state_dict": tiny.state_dict()}, official)
    # Composer's checkpoint layout: the ComposerModel's state dict (its VLMo under "model.") at state/model.
    composer = tmp_path / "latest-rank0.pt"
    torch.save({"state": {"model": {f"model.{k}": v for k, v in tiny.state_dict().items()}}, "rng": []}, composer)
    client = boto3.client("s3", endpoint_url=__import__("os").environ["S3_ENDPOINT_URL"])
    for path in [*folder.iterdir(), official, composer]:
        key = f"weights/{path.relative_to(tmp_path)}"
        client.upload_file(str(path), s3_bucket, key)
    s3 = f"s3://{s3_bucket}/weights"

    assert same_weights(build_model(f"{s3}/export"), tiny)  # a folder: every object under the prefix
    shape = {k: v for k, v in TINY_SHAPE.items()}
    assert same_weights(build_model(f"{s3}/official.pt", size="small", vl_ffn_start=1, max_text_len=16, **shape), tiny)
    assert same_weights(build_model(f"{s3}/latest-rank0.pt", "composer", size="small", vl_ffn_start=1, **shape), tiny)
    target = VLMo(tiny_config())
    load_weights_into(target, "composer", f"{s3}/latest-rank0.pt")
    assert same_weights(target, tiny)
    # A remote save_folder as Composer writes it: the checkpoint under its own name and
    # latest-rank0.pt.symlink holding that object's key (the chain tests read a real one).
    client.upload_file(str(composer), s3_bucket, "runs/a/checkpoints/ep0-ba2-rank0.pt")
    client.put_object(Bucket=s3_bucket, Key="runs/a/checkpoints/latest-rank0.pt.symlink",
                      Body=b"runs/a/checkpoints/ep0-ba2-rank0.pt")
    target = VLMo(tiny_config())
    load_weights_into(target, "composer", f"s3://{s3_bucket}/runs/a/checkpoints/latest-rank0.pt")
    assert same_weights(target, tiny)
    with pytest.raises(FileNotFoundError, match="no object and no folder"):
        build_model(f"{s3}/missing")


def test_one_vocabulary_with_a_deprecated_name(tiny, tmp_path):
    folder = VLMoInference(tiny).export(tmp_path / "export")
    assert WEIGHT_KINDS == ("official", "beit", "safetensors", "composer")
    with pytest.warns(FutureWarning, match="'exported' is deprecated: use 'safetensors'"):
        init = InitFrom(kind="exported", path=str(folder))
    assert init.kind == "safetensors"
    with pytest.warns(FutureWarning, match="deprecated"):
        loaded = VLMoInference.from_pretrained(folder, kind="exported")
    assert same_weights(loaded.model, tiny)
    with pytest.raises(ValueError, match=r"init_from.kind 'pickle' is not one of \('official', 'beit'"):
        InitFrom(kind="pickle", path=str(folder))
    with pytest.raises(ValueError, match="BEiT file holds only a vision encoder"):
        build_model(Path(folder), "beit")


def test_eval_cli_names_weights_once_in_the_same_vocabulary(tiny, tmp_path, capsys):
    from vlmo_composer.training.config import ConfigError
    from vlmo_composer.checkpoints.sources import fetch_source
    from vlmo_composer.evaluation.cli import chosen_weights, parse_args

    folder = str(VLMoInference(tiny).export(tmp_path / "export"))
    assert chosen_weights(parse_args(["run.yaml", "--weights", folder]), None) == (folder, "auto")
    assert fetch_source(folder) == (folder, "safetensors")  # what eval.py then does with an unnamed kind
    assert chosen_weights(parse_args(["run.yaml", "--weights", "x.pt", "--kind", "composer"]), None) == ("x.pt", "composer")
    assert chosen_weights(parse_args(["run.yaml"]), "runs/a/latest-rank0.pt") == ("runs/a/latest-rank0.pt", "composer")
    assert chosen_weights(parse_args(["run.yaml", "--official", "o.pt"]), None) == ("o.pt", "official")
    assert "--official is deprecated; use --weights o.pt --kind official" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="name the weights once"):
        chosen_weights(parse_args(["run.yaml", "--weights", "a.pt", "--checkpoint", "b.pt"]), None)
    with pytest.raises(ValueError, match="--kind 'exportd' is not one of"):
        chosen_weights(parse_args(["run.yaml", "--weights", "a.pt", "--kind", "exportd"]), None)
