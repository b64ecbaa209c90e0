"""The README's Python example, extracted from README.md and run as printed on the
output of a fresh ``make quickstart`` (the session's ``quickstart`` fixture)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from vlmo_composer import VLMoInference

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_python_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    examples = [b for b in blocks if "create_model_and_transforms" in b]
    assert len(examples) == 1, "the README should hold one inference example"
    return examples[0]


@pytest.mark.slow
def test_readme_inference_example_runs_after_the_quickstart(quickstart, monkeypatch, capsys):
    code = readme_python_example()
    monkeypatch.chdir(quickstart.folder)

    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)

    printed = capsys.readouterr().out
    assert namespace["image_features"].shape == (3, 128) and namespace["text_features"].shape == (2, 128)
    assert namespace["text_probs"].shape == (2, 3)
    assert isinstance(namespace["model"], torch.nn.Module)
    assert namespace["preprocess_train"].train and not namespace["preprocess_val"].train
    assert torch.equal(namespace["image_features"], namespace["tasks"].encode_images(namespace["gallery"]))
    assert namespace["hits"].indices.shape == (2, 2) and namespace["match"].shape == (3, 2)
    assert namespace["predicted"].shape == (3,)
    print(printed)
    # The quick-start model finds each caption's own picture first (what the README's comment says).
    assert namespace["hits"].indices[:, 0].tolist() == [0, 1], printed
    exported = VLMoInference.from_pretrained(quickstart.folder / "exported")
    trained = VLMoInference.from_training_config(str(quickstart.folder / "yamls/quickstart.yaml"))
    assert all(torch.equal(v, trained.model.state_dict()[k]) for k, v in exported.model.state_dict().items())
