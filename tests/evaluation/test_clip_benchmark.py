"""CLIP_benchmark's own evaluation functions run on our model through the open_clip interface
(``create_model_and_transforms`` / ``get_tokenizer``, nothing wrapped) and give exactly the
numbers of ``eval.py zeroshot`` and ``eval.py`` retrieval on the same synthetic data (issue 18).

Naming: CLIP_benchmark's ``image_retrieval_recall@k`` ranks images for each caption (our IR@k,
text -> image) and ``text_retrieval_recall@k`` captions for each image (our TR@k). Both count a
query as found when at least one positive is in its top k (the paper rule, ours too). Captions
are keyed to images by loader position there and by ids here, so the same split read in order
gives the same positives. A randomised tiny model (wide init) has no tied scores, so ranks do
not depend on how either breaks ties.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from inference.inference_helpers import randomised, tiny_config
from PIL import Image
from streaming import StreamingDataset
from torch.utils.data import DataLoader, Dataset

from vlmo_composer import VLMo, VLMoInference, create_model_and_transforms, get_tokenizer
from vlmo_composer.data.images import decode_image
from vlmo_composer.evaluation.cli import main as eval_main

clip_benchmark = pytest.importorskip("clip_benchmark")
from clip_benchmark.datasets.builder import image_captions_collate_fn  # noqa: E402
from clip_benchmark.metrics import zeroshot_classification, zeroshot_retrieval  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "yamls/quickstart.yaml")
TEXT_LEN = 64  # no synthetic caption is truncated: truncation made captions of two images identical
TEST_IMAGES = 12  # image_text/test: five captions each
CLASSES = [f"class{i}" for i in range(6)]  # >= 5, so top-5 is defined on both sides
IMAGES_PER_CLASS = 2
TEMPLATES = ["a photo of a {}.", "a drawing of a {}."]
RETRIEVAL_KEYS = {f"{ours}_r{k}": f"{theirs}_retrieval_recall@{k}"
                  for k in (1, 5, 10) for ours, theirs in (("tr", "text"), ("ir", "image"))}


class MDSRows(Dataset):
    """The rows of one MDS split in order, images through ``preprocess_val`` (CLIP_benchmark's input)."""

    def __init__(self, split: Path, preprocess, target: str):
        self.rows = StreamingDataset(local=str(split), shuffle=False, batch_size=1)
        self.preprocess, self.target = preprocess, target

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        row = self.rows[i]
        return self.preprocess(decode_image(row["image"])), row[self.target]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Synthetic image-text data, a class-folder split, and one tiny model exported once."""
    from data_prep.convert_images import main as convert_images
    from data_prep.make_synthetic import main as make_synthetic

    root = tmp_path_factory.mktemp("clipbench")
    make_synthetic(["--out", str(root / "mds"), "--train", "2", "--val", "2", "--test", str(TEST_IMAGES),
                    "--questions-per-image", "1", "--image-size", "32", "--num-workers", "1", "--no-progress"])
    rng = np.random.default_rng(0)
    for c in CLASSES:
        (root / "folders" / c).mkdir(parents=True)
        for i in range(IMAGES_PER_CLASS):
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / "folders" / c / f"{i}.png")
    convert_images(["--images", str(root / "folders"), "--split", "val", "--out", str(root / "images"),
                    "--num-workers", "1", "--no-progress"])
    (root / "templates.txt").write_text("\n".join(TEMPLATES) + "\n")
    torch.manual_seed(0)
    model = randomised(VLMo(tiny_config(init_std=0.3, vocab_size=30522, max_text_len=TEXT_LEN)), seed=1)
    VLMoInference(model).export(root / "model")
    return root


@pytest.fixture(scope="module")
def ours(setup):
    """The open_clip interface, as a CLIP_benchmark user loads a model."""
    model, _, preprocess_val = create_model_and_transforms(str(setup / "model"))
    return model.eval(), preprocess_val, get_tokenizer(str(setup / "model"))


# accuracy() converts a 1-element array with float() (NumPy >= 1.25 warns): CLIP_benchmark's code.
@pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0 to a scalar:DeprecationWarning")
def test_zero_shot_classification_equals_eval_zeroshot(setup, ours, tmp_path):
    model, preprocess_val, tokenizer = ours
    split = setup / "images" / "val"
    assert eval_main(["zeroshot", "--data", str(split), "--weights", str(setup / "model"), "--templates",
                      str(setup / "templates.txt"), "--batch-size", "5", "--device", "cpu",
                      "--output", str(tmp_path / "zeroshot.json")]) == 0
    expected = json.loads((tmp_path / "zeroshot.json").read_text())
    classes = json.loads((split / "classes.json").read_text())["classes"]
    assert classes == CLASSES and expected["num_images"] == len(CLASSES) * IMAGES_PER_CLASS

    dataset = MDSRows(split, preprocess_val, "label")
    dataset.classes = classes  # what CLIP_benchmark's evaluate reads for the class count
    loader = DataLoader(dataset, batch_size=5, num_workers=0)
    templates = [t.replace("{}", "{c}") for t in TEMPLATES]  # CLIP_benchmark's placeholder
    classifier = zeroshot_classification.zero_shot_classifier(model, tokenizer, classes, templates, "cpu", amp=False)
    logits, target = zeroshot_classification.run_classification(model, classifier, loader, "cpu", amp=False)
    top1, top5 = zeroshot_classification.accuracy(logits, target, topk=(1, 5))
    full = zeroshot_classification.evaluate(model, loader, tokenizer, classes, templates, "cpu", amp=False)

    assert (top1, top5) == (full["acc1"], full["acc5"])
    # No near-tied class logits (100 x cosine), so no ranking hinges on rounding.
    assert logits.sort(dim=1).values.diff(dim=1).min() > 1e-4
    assert 0 < top1 < top5 <= 1  # neither all right nor all wrong: a comparison that can fail
    assert top1 == pytest.approx(expected["top1"], abs=1e-9)
    assert top5 == pytest.approx(expected["top5"], abs=1e-9)
    assert full["mean_per_class_recall"] == pytest.approx(expected["mean_per_class_recall"], abs=1e-9)


def test_retrieval_equals_eval_retrieval(setup, ours, tmp_path):
    model, preprocess_val, tokenizer = ours
    tiny = ["task.model.hidden_size=64", "task.model.num_layers=2", "task.model.num_heads=2",
            "task.model.ffn_size=128", "task.model.vl_ffn_start=1", "variables.image_size=32",
            f"variables.text_len={TEXT_LEN}", f"variables.data={setup / 'mds'}", "device_eval_batch_size=5"]
    assert eval_main([QUICKSTART, *tiny, "--weights", str(setup / "model"), "--kind", "safetensors",
                      "--device", "cpu", "--output", str(tmp_path / "retrieval.json")]) == 0
    expected = json.loads((tmp_path / "retrieval.json").read_text())
    assert expected["test"]["samples"] == TEST_IMAGES

    dataset = MDSRows(setup / "mds" / "image_text" / "test", preprocess_val, "captions")
    assert all(len(captions) > 1 for _, captions in (dataset[i] for i in range(len(dataset))))
    loader = DataLoader(dataset, batch_size=5, num_workers=0, collate_fn=image_captions_collate_fn)
    metrics = zeroshot_retrieval.evaluate(model, loader, tokenizer, "cpu", amp=False, recall_k_list=[1, 5, 10])

    # CLIP_benchmark averages in float32: its recall is the float32 nearest our fraction, exactly.
    for key, theirs in RETRIEVAL_KEYS.items():
        assert metrics[theirs] == torch.tensor(expected[key], dtype=torch.float32).item(), (key, theirs)
    assert 0 < expected["ir_r1"] and expected["tr_r10"] < 1 and expected["ir_r10"] < 1  # can fail

    # No tied scores within any query's ranking, so neither side's tie-breaking decides a rank.
    with torch.no_grad():
        images = torch.stack([dataset[i][0] for i in range(len(dataset))])
        captions = [c for i in range(len(dataset)) for c in dataset[i][1]]
        image_features, text_features, _ = model(images, tokenizer(captions))
    scores = image_features @ text_features.T  # [images, captions]
    for ranking in (scores, scores.T):
        assert ranking.sort(dim=1).values.diff(dim=1).min() > 1e-6  # float32 rounding of a cosine: ~1e-7
