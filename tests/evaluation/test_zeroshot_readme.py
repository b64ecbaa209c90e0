"""The README's zero-shot command, as printed: an ImageNet-style split in ``s3://my-bucket``
(written by ``convert_images.py`` from class folders), an exported model in ``exported/``,
the 1000 ImageNet class names and OpenAI's 80 templates (80,000 prompts, a tiny model)."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import boto3
import numpy as np
import pytest
from PIL import Image
from inference.inference_helpers import randomised, tiny_config

from vlmo_composer import VLMo, VLMoInference
from vlmo_composer.evaluation.cli import main as eval_main

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_zeroshot_line() -> str:
    text = README.read_text()
    line = next(line for line in text.splitlines() if line.startswith("python eval.py zeroshot"))
    return line.split("  #", 1)[0].strip()


@pytest.mark.s3
def test_readme_zeroshot_command_runs_as_printed(s3_bucket, tmp_path, monkeypatch):
    from data_prep.convert_images import main as convert_images

    line = readme_zeroshot_line()
    argv = shlex.split(line)[2:]  # after "python eval.py"
    data = argv[argv.index("--data") + 1]
    assert data.startswith("s3://my-bucket/") and data.endswith("/val"), line
    boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"]).create_bucket(Bucket="my-bucket")
    # ImageNet's layout: one folder per class (WordNet ids, sorted = label order), two images each.
    rng = np.random.default_rng(0)
    for wnid in ("n01440764", "n01443537"):
        (tmp_path / "images" / wnid).mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / wnid / f"{wnid}_{i}.JPEG")
    [report] = convert_images(["--images", str(tmp_path / "images"), "--split", "val",
                               "--out", data.rsplit("/", 1)[0], "--num-workers", "1", "--no-progress"])
    assert report.location == data and report.records == 4
    monkeypatch.chdir(tmp_path)
    weights = argv[argv.index("--weights") + 1]
    VLMoInference(randomised(VLMo(tiny_config(vocab_size=30522, max_text_len=40)), seed=3)).export(weights)

    assert eval_main([*argv, "--output", "zeroshot.json"]) == 0
    results = json.loads(Path("zeroshot.json").read_text())
    assert (results["num_images"], results["num_classes"]) == (4, 1000)
    assert results["chance_top1"] == pytest.approx(1 / 1000)
    assert 0.0 <= results["top1"] <= results["top5"] <= 1.0
