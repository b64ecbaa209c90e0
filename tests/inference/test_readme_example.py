"""The README's Python example, extracted from README.md and run as printed.

The files it names are made here: a tiny model with ITC and ITM heads exported to
the folder name the README loads, and three JPEG images.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from inference_helpers import random_images, randomised, tiny_config

from vlmo_composer import VLMo, VLMoInference

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_python_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    examples = [b for b in blocks if "create_model_and_transforms" in b]
    assert len(examples) == 1, "the README should hold one inference example"
    return examples[0]


def test_readme_inference_example_runs_as_printed(tmp_path, monkeypatch):
    code = readme_python_example()
    model = randomised(VLMo(tiny_config(init_std=0.3)), seed=4)
    loaded_from = re.search(r'create_model_and_transforms\("([^"]+)"\)', code).group(1)
    VLMoInference(model).export(tmp_path / loaded_from)
    gallery = re.search(r"gallery = (\[.*?\])", code).group(1)
    for name, image in zip(eval(gallery), random_images(3, seed=8)):
        image.convert("RGB").save(tmp_path / name, format="JPEG")
    monkeypatch.chdir(tmp_path)

    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)

    assert namespace["image_features"].shape == (3, 64) and namespace["text_features"].shape == (2, 64)
    assert namespace["hits"].indices.shape == (1, 2) and namespace["match"].shape == (3, 1)
    assert namespace["predicted"].shape == (3,)
    exported = VLMoInference.from_pretrained(tmp_path / "exported")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in exported.model.state_dict().items())
