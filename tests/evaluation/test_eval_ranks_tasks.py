"""VQA, NLVR2, the VQA submission and zero-shot classification on 2 ranks (gloo) give exactly
one process's numbers and file (issue 19).

Every split holds 7 samples, so Streaming pads each rank's share to 4 by repeating one
sample: a metric counting it twice, or a rank's share reported as the whole, shows here.
``eval.py``'s own ``main`` runs on each rank, as under ``composer -n 2 eval.py``; before
this, it refused every one of these commands on several ranks (exit 2).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from composer.core import Timestamp
from distributed import run_distributed
from evaluation.test_vqa_submission import rows
from inference.inference_helpers import randomised, tiny_config
from PIL import Image

from vlmo_composer import VLMo, VLMoInference
from vlmo_composer.checkpoints import save_safetensors
from vlmo_composer.evaluation.cli import main
from vlmo_composer.training.builders import build_task
from vlmo_composer.training.config import load_config

pytestmark = pytest.mark.distributed

ROOT = Path(__file__).resolve().parents[2]
VQA, NLVR2 = str(ROOT / "yamls/finetune/vqa_base.yaml"), str(ROOT / "yamls/finetune/nlvr2_base.yaml")
SAMPLES = 7  # per split: not divisible by the 2 ranks
TINY = ["task.model.size=small", "task.model.hidden_size=64", "task.model.num_layers=2", "task.model.num_heads=2",
        "task.model.ffn_size=128", "task.model.vl_ffn_start=1", "task.model.max_text_len=40",
        "variables.image_size=32", "device_eval_batch_size=3"]
CHECKPOINT_BATCH = 5
EXIT_CODES = {"vqa": 0, "nlvr2": 0, "submission": 0, "zeroshot": 0, "refused": 2}


def _one_answered(test_dev: Path, val: Path, out: Path) -> Path:
    """test-dev with its 4th question carrying val's annotator answers: a split only one rank's
    share of which has answers (the submission must be refused on every rank, not hang)."""
    from streaming import MDSWriter

    columns = json.loads((test_dev / "index.json").read_text())["shards"][0]
    with MDSWriter(out=str(out), columns=dict(zip(columns["column_names"], columns["column_encodings"]))) as writer:
        for i, row in enumerate(rows(test_dev)):
            if i == 3:
                row = {**row, **{k: rows(val)[0][k] for k in ("answers", "labels", "scores")}}
            writer.write(row)
    return out


def _tiny_task(recipe: str, overrides: list[str]):
    cfg = load_config(recipe, overrides)
    torch.manual_seed(0)
    return build_task({k: v for k, v in cfg.task.items() if k != "init_from"})


def _zero_shot_split(root: Path) -> Path:
    """7 images in 3 class folders, converted as the README does (labels, classes.json)."""
    from data_prep.convert_images import main as convert_images

    rng = np.random.default_rng(0)
    for i in range(SAMPLES):
        folder = root / "folders" / f"class{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    convert_images(["--images", str(root / "folders"), "--split", "val", "--out", str(root / "images"),
                    "--num-workers", "1", "--no-progress"])
    return root / "images" / "val"


@pytest.fixture(scope="module")
def commands(tmp_path_factory) -> dict[str, list[str]]:
    """Each command's arguments, ending in the output path's folder placeholder ``{out}``."""
    from data_prep.make_synthetic import main as make_synthetic

    root = tmp_path_factory.mktemp("evalranks")
    make_synthetic(["--out", str(root / "mds"), "--train", "4", "--val", str(SAMPLES), "--test", str(SAMPLES),
                    "--questions-per-image", "1", "--image-size", "32", "--no-progress"])
    data = [f"variables.root={root}", "variables.run=evalranks", *TINY]  # then eval.py's flags
    vqa_task = _tiny_task(VQA, data)
    # Untrained, but leaning to the commonest val answer, so that some predictions are right.
    common = Counter(a for row in rows(root / "mds/vqa/val") for a in row["answers"]).most_common(1)[0][0]
    with torch.no_grad():
        vqa_task.model.vqa_classifier[-1].bias[vqa_task.answers.index(common)] += 3.0
    checkpoint = root / "vqa-ep0-ba5.pt"  # laid out as Composer saves one: its step goes into --output
    stamp = {"Timestamp": Timestamp(batch=CHECKPOINT_BATCH).state_dict()}
    torch.save({"state": {"model": vqa_task.state_dict(), "timestamp": stamp}}, checkpoint)
    nlvr2 = save_safetensors(_tiny_task(NLVR2, data).model, root / "nlvr2")
    zero_shot = root / "zero_shot_model"
    VLMoInference(randomised(VLMo(tiny_config(vocab_size=30522, max_text_len=40)), seed=3)).export(zero_shot)
    mixed = _one_answered(root / "mds/vqa/test-dev", root / "mds/vqa/val", root / "mixed")
    (root / "templates.txt").write_text("a photo of a {}.\na drawing of a {}.\n")
    # No loader worker processes: each would import the stack again (seconds on a busy box).
    vqa = [VQA, *data, "eval_loaders.0.num_workers=0", "predict_loaders.0.num_workers=0",
           "--weights", str(checkpoint), "--kind", "composer", "--device", "cpu"]
    nlvr2_args = [NLVR2, *data, "eval_loaders.0.num_workers=0", "eval_loaders.1.num_workers=0",
                  "--weights", str(nlvr2), "--kind", "safetensors", "--device", "cpu"]
    return {
        "vqa": [*vqa, "--output", "{out}/vqa.json"],
        "nlvr2": [*nlvr2_args, "--output", "{out}/nlvr2.json"],
        "submission": [*vqa, "--vqa-submission", "{out}/test-dev.json", "--split", "test-dev"],
        "refused": [VQA, *data, "eval_loaders.0.num_workers=0", "predict_loaders.1.num_workers=0",
                    f"predict_loaders.1.dataset.remote={mixed}", "--weights", str(checkpoint), "--kind", "composer",
                    "--device", "cpu", "--vqa-submission", "{out}/refused.json", "--split", "test"],
        "zeroshot": ["zeroshot", "--data", str(_zero_shot_split(root)), "--weights", str(zero_shot),
                     "--templates", str(root / "templates.txt"), "--batch-size", "3", "--device", "cpu",
                     "--output", "{out}/zeroshot.json"],
    }


def _run_all(rank: int, world: int, commands: dict[str, list[str]], out: str) -> dict[str, int]:
    """Every command through eval.py's ``main`` on this rank; their exit codes."""
    return {name: main([a.replace("{out}", out) for a in args]) for name, args in commands.items()}


@pytest.fixture(scope="module")
def outputs(commands, tmp_path_factory) -> tuple[Path, Path]:
    """The output folders of one process and of two ranks (every command exited as expected)."""
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    assert _run_all(0, 1, commands, str(one)) == EXIT_CODES
    assert run_distributed(_run_all, world=2, args=(commands, str(two))) == [EXIT_CODES] * 2
    assert not any((folder / "refused.json").exists() for folder in (one, two))
    return one, two


def _numbers(path: Path) -> tuple[dict, dict]:
    """The JSON's split records without their wall time, and the rest."""
    results = json.loads(path.read_text())
    splits = {k: {m: v for m, v in r.items() if m != "wall_s"} for k, r in results.items()
              if isinstance(r, dict) and "samples" in r}
    return splits, {k: v for k, v in results.items() if k not in splits}


def test_vqa_on_two_ranks_scores_the_whole_split_once(outputs, commands):
    one, two = (_numbers(folder / "vqa.json") for folder in outputs)
    assert one[0] == two[0] and one[0]["val"]["samples"] == SAMPLES
    assert 0 < one[0]["val"]["VQAAccuracy"] < 1
    checkpoint = {"path": commands["vqa"][commands["vqa"].index("--weights") + 1], "kind": "composer",
                  "batch": CHECKPOINT_BATCH}
    assert (one[1]["world_size"], two[1]["world_size"]) == (1, 2)
    assert one[1]["checkpoint"] == two[1]["checkpoint"] == checkpoint


def test_nlvr2_on_two_ranks_scores_both_splits_once(outputs):
    one, two = (_numbers(folder / "nlvr2.json") for folder in outputs)
    assert one[0] == two[0] and set(one[0]) == {"dev", "test1"}
    assert all(r["samples"] == SAMPLES and 0 < r["accuracy"] < 1 for r in one[0].values())
    assert two[1]["world_size"] == 2


def test_vqa_submission_on_two_ranks_is_the_same_file(outputs):
    one, two = ((folder / "test-dev.json").read_bytes() for folder in outputs)
    assert one == two and len(json.loads(one)) == SAMPLES


def test_zero_shot_on_two_ranks_classifies_every_image_once(outputs):
    one, two = (json.loads((folder / "zeroshot.json").read_text()) for folder in outputs)
    numbers = ("top1", "top5", "mean_per_class_recall", "num_images", "num_classes", "chance_top1")
    assert {k: one[k] for k in numbers} == {k: two[k] for k in numbers}
    assert (one["num_images"], one["num_classes"], one["world_size"], two["world_size"]) == (SAMPLES, 3, 1, 2)
