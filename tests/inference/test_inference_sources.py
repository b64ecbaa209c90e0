"""Loading the inference API from its three sources, exporting, and refusing unsafe files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from composer import Trainer
from inference_helpers import ANSWERS, CAPTIONS, TINY_MODEL, TINY_SHAPE, random_images
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from vlmo_composer.training.builders import build_optimizer, build_task
from vlmo_composer.training.config import load_config
from vlmo_composer.data.tokenizer import bundled_vocab_path
from vlmo_composer.data.vqa_answers import answer_vocab_to_json
from vlmo_composer.inference import VLMoCLIP, VLMoInference, create_model_and_transforms, get_tokenizer


def all_outputs(inference: VLMoInference, images) -> dict[str, torch.Tensor]:
    """Every output the API computes, on the same inputs."""
    left, right = images[:5], images[1:6]
    hits = inference.retrieve_images(CAPTIONS, images, k=2, rerank_k=4)
    return {
        "image_embeddings": inference.encode_images(images),
        "text_embeddings": inference.encode_texts(CAPTIONS),
        "vqa_logits": inference.vqa_logits(left, CAPTIONS),
        "nlvr2_logits": inference.nlvr2_logits(left, right, CAPTIONS),
        "reranked_indices": hits.indices,
        "reranked_scores": hits.scores,
    }


def test_export_loads_back_to_identical_outputs(full_model, images, tmp_path):
    original = VLMoInference(full_model, answers=ANSWERS)
    before = all_outputs(original, images)
    folder = original.export(tmp_path / "export")

    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "vocab.txt", "tokenizer_config.json", "answer_vocab.json"} <= names
    assert not [n for n in names if n.endswith((".pt", ".pth", ".bin", ".pkl"))]  # nothing to unpickle
    assert (folder / "vocab.txt").read_bytes() == Path(bundled_vocab_path()).read_bytes()
    assert json.loads((folder / "answer_vocab.json").read_text())["answers"] == ANSWERS
    weights = load_file(str(folder / "model.safetensors"))
    assert weights.keys() == full_model.state_dict().keys()

    loaded = VLMoInference.from_pretrained(folder)
    assert loaded.config == full_model.config
    assert loaded.answers == ANSWERS
    assert loaded.tokenizer(CAPTIONS)["input_ids"] == original.tokenizer(CAPTIONS)["input_ids"]
    model, _, preprocess_val = create_model_and_transforms(folder)
    assert isinstance(model, VLMoCLIP) and model.config == full_model.config and model.answers == ANSWERS
    assert preprocess_val.image_size == 32
    assert torch.equal(get_tokenizer(folder)(CAPTIONS), loaded.tokenize(CAPTIONS)["input_ids"])
    after = all_outputs(loaded, images)
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert loaded.answer_questions(images[:5], CAPTIONS) == original.answer_questions(images[:5], CAPTIONS)


def test_export_does_not_overwrite_by_accident_and_drops_a_stale_answer_vocab(full_model, tmp_path):
    VLMoInference(full_model, answers=ANSWERS).export(tmp_path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        VLMoInference(full_model, answers=ANSWERS).export(tmp_path)
    VLMoInference(full_model).export(tmp_path, overwrite=True)
    assert not (tmp_path / "answer_vocab.json").exists()
    assert VLMoInference.from_pretrained(tmp_path).answers is None


def test_official_file_reproduces_the_official_outputs(official_tiny, tmp_path):
    """The official tiny reference, loaded as a user would load an official checkpoint file."""
    path = tmp_path / "vlmo_tiny_official.pt"
    torch.save({"state_dict": official_tiny["state_dict"]}, path)
    inference = VLMoInference.from_pretrained(path, size="tiny")
    inputs, expected = official_tiny["inputs"], official_tiny["outputs"]
    # Its vocabulary has 100 ids, so texts go in as token ids.
    tokens = {"input_ids": inputs["text_ids"], "attention_mask": inputs["text_masks"]}

    image_embeddings = inference.encode_images(inputs["image"])
    text_embeddings = inference.encode_texts(tokens)
    assert torch.allclose(image_embeddings, expected["image.cls_feats"], atol=1e-5)
    assert torch.allclose(text_embeddings, expected["text.cls_feats"], atol=1e-5)

    # Re-ranking the whole gallery: each caption's own image scores ITM(match) + cosine,
    # the official ITM logit on that pair.
    hits = inference.retrieve_images(tokens, inputs["image"], k=4, rerank_k=4)
    cosine = expected["text.cls_feats"] @ expected["image.cls_feats"].T
    for caption in range(4):
        (slot,) = (hits.indices[caption] == caption).nonzero()[0]
        own = expected["heads.itm_logits_pos"][caption, 1] + cosine[caption, caption]
        assert abs(hits.scores[caption, slot].item() - own.item()) < 1e-4

    with pytest.raises(ValueError, match="vocabulary of 100"):
        inference.encode_texts(["a cat"])  # BERT ids do not fit the tiny vocabulary

    reloaded = VLMoInference.from_pretrained(inference.export(tmp_path / "export"))
    assert torch.equal(reloaded.encode_images(inputs["image"]), image_embeddings)


def test_official_file_keeps_its_resolution_unless_asked(full_model, tmp_path):
    """A checkpoint fine-tuned at another resolution loads at it (its relative table says which)."""
    path = tmp_path / "official_32px.pt"
    torch.save(full_model.state_dict(), path)
    shape = {k: v for k, v in TINY_MODEL.items() if k not in ("size", "image_size")}
    at_trained = VLMoInference.from_pretrained(path, size="small", **shape)
    assert at_trained.config.image_size == 32  # the named "small" size is 64 px
    assert torch.equal(at_trained.encode_images(random_images(2, seed=5)),
                       VLMoInference(full_model).encode_images(random_images(2, seed=5)))
    at_64 = VLMoInference.from_pretrained(path, size="small", image_size=64, **shape)
    assert at_64.config.image_size == 64 and at_64.preprocess.image_size == 64
    assert at_64.encode_images(random_images(2, seed=5)).shape == (2, 64)
    table_32, table_64 = (m.model.relative_position_bias_table for m in (at_trained, at_64))
    assert table_64.shape[0] > table_32.shape[0]
    assert torch.equal(table_64[-(2 * 196 + 5):], table_32[-(2 * 196 + 5):])  # text and cross-modal rows kept
    # An exported folder moves to another resolution the same way.
    exported_64 = VLMoInference.from_pretrained(at_trained.export(tmp_path / "export"), image_size=64)
    assert exported_64.config == at_64.config
    assert all(torch.equal(v, at_64.model.state_dict()[k]) for k, v in exported_64.model.state_dict().items())


# ---------------------------------------------------------------------- Composer checkpoints
TRAINING_YAML = """\
run_name: vqa-tiny
seed: 3
task:
  name: vqa
  answer_vocab: {tmp}/answer_vocab.json
  model: {model}
train_loader:
  name: vqa
  dataset: {{local: {tmp}/unused, image_size: 32, max_text_len: 16, hflip: false, scale: [0.8, 1.0]}}
optimizer: {{name: adamw, lr: 1.0e-2}}
scheduler: {{name: constant_with_warmup, t_warmup: 0ba}}
max_duration: 1ba
global_train_batch_size: 4
save_folder: {tmp}/runs/{{run_name}}/checkpoints
save_interval: 1ba
"""


@pytest.fixture(scope="module")
def composer_run(tmp_path_factory):
    """A genuine Composer checkpoint: the YAML's VQA task trained one step by a Composer Trainer."""
    tmp = tmp_path_factory.mktemp("composer_run")
    (tmp / "answer_vocab.json").write_text(answer_vocab_to_json(ANSWERS))
    yaml = tmp / "vqa_tiny.yaml"
    yaml.write_text(TRAINING_YAML.format(tmp=tmp, model=json.dumps(TINY_MODEL)))
    cfg = load_config(str(yaml))
    task = build_task(cfg.task)
    initial = {k: v.clone() for k, v in task.model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    samples = [
        {"input_ids": torch.randint(1000, 3000, (16,), generator=g), "attention_mask": torch.ones(16, dtype=torch.long),
         "pixel_values": torch.randn(3, 32, 32, generator=g), "vqa_targets": torch.rand(5, generator=g),
         "question_id": torch.tensor(i)}
        for i in range(4)
    ]
    trainer = Trainer(
        model=task, train_dataloader=DataLoader(samples, batch_size=4), max_duration=cfg.max_duration,
        optimizers=build_optimizer(cfg.optimizer, task), save_folder=cfg.save_folder, save_interval=cfg.save_interval,
        run_name=cfg.run_name, seed=cfg.seed, device="cpu", progress_bar=False,
    )
    trainer.fit()
    trainer.close()
    checkpoint = tmp / "runs" / "vqa-tiny" / "checkpoints" / "latest-rank0.pt"
    assert checkpoint.exists()
    return yaml, checkpoint, task.model.eval(), initial


def test_composer_checkpoint_through_its_training_yaml(composer_run):
    yaml, checkpoint, trained, initial = composer_run
    inference = VLMoInference.from_training_config(str(yaml))  # latest-rank0.pt of the run
    assert inference.config == trained.config
    assert inference.answers == ANSWERS
    state = inference.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in trained.state_dict().items())
    assert not all(torch.equal(state[k], v) for k, v in initial.items())  # the step moved the weights

    images = random_images(4, seed=11)
    questions = CAPTIONS[:4]
    direct = VLMoInference(trained, answers=ANSWERS)
    assert torch.equal(inference.vqa_logits(images, questions), direct.vqa_logits(images, questions))
    answers = inference.answer_questions(images, questions)
    assert len(answers) == 4 and set(answers) <= set(ANSWERS)

    # open_clip's entry point: the run's model, its training loader's augmentation, its text length.
    model, preprocess_train, preprocess_val = create_model_and_transforms(str(yaml))
    with torch.no_grad():
        pixels = torch.stack([preprocess_val(im.convert("RGB")) for im in images])
        logits = model.vqa_logits(pixels, get_tokenizer(str(yaml))(questions))
    assert model.answers == ANSWERS and torch.allclose(logits, inference.vqa_logits(images, questions), atol=1e-6)
    assert (preprocess_train.train, preprocess_train.hflip, preprocess_train.scale) == (True, False, (0.8, 1.0))
    assert get_tokenizer(str(yaml)).context_length == 16



def test_composer_checkpoint_given_explicitly(composer_run):
    """``kind="composer"`` with the model's shape: heads, 32 px and 16 tokens come from the weights."""
    _, checkpoint, trained, _ = composer_run
    inference = VLMoInference.from_pretrained(checkpoint, kind="composer", size="small", answer_vocab=ANSWERS,
                                              **TINY_SHAPE)
    config = inference.config
    assert (config.image_size, config.max_text_len, config.vqa_num_labels, config.vl_ffn_start) == (32, 16, 5, 1)
    assert not (config.itc_head or config.itm_head or config.mlm_head or config.nlvr2_head)
    images = random_images(3, seed=12)
    direct = VLMoInference(trained, answers=ANSWERS)
    assert torch.equal(inference.vqa_logits(images, CAPTIONS[:3]), direct.vqa_logits(images, CAPTIONS[:3]))

    with pytest.raises(ValueError, match="kind='composer'"):  # never unpickled on a guess
        VLMoInference.from_pretrained(checkpoint, size="small", **TINY_SHAPE)


# ---------------------------------------------------------------------- unsafe and bad sources
class RunsCodeWhenUnpickled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_posing_as_an_official_file_is_refused_without_running(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "vlmo_base.pt"
    torch.save({"state_dict": RunsCodeWhenUnpickled(marker)}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        VLMoInference.from_pretrained(path, size="base")
    with pytest.raises(ValueError, match="weights_only=True"):
        create_model_and_transforms("base", pretrained=path, kind="official")
    assert not marker.exists()


def test_bad_sources_give_clear_errors(full_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt not found"):
        VLMoInference.from_pretrained(tmp_path / "missing.pt", size="base")
    with pytest.raises(ValueError, match="kind 'onnx'"):
        VLMoInference.from_pretrained(tmp_path, kind="onnx")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        VLMoInference.from_pretrained(tmp_path)  # a folder that is not an export
    path = tmp_path / "weights.pt"
    torch.save(full_model.state_dict(), path)
    with pytest.raises(ValueError, match="pass size="):
        VLMoInference.from_pretrained(path)
    with pytest.raises(ValueError, match="not a Composer checkpoint"):
        VLMoInference.from_pretrained(path, kind="composer", size="small")
    folder = VLMoInference(full_model).export(tmp_path / "export")
    with pytest.raises(ValueError, match="do not pass size"):
        VLMoInference.from_pretrained(folder, size="base")
    with pytest.raises(ValueError, match="4 answers but the model's VQA head has 5"):
        VLMoInference.from_pretrained(folder, answer_vocab=ANSWERS[:4])
    (tmp_path / "bad_vocab.json").write_text(json.dumps({"answers": ["a", "a"]}))
    with pytest.raises(ValueError, match=r"bad_vocab\.json: .*duplicate"):
        VLMoInference.from_pretrained(folder, answer_vocab=str(tmp_path / "bad_vocab.json"))


def test_training_yaml_needs_a_checkpoint(tmp_path):
    yaml = tmp_path / "no_save.yaml"
    text = TRAINING_YAML.format(tmp=tmp_path, model=json.dumps(TINY_MODEL))
    yaml.write_text("\n".join(line for line in text.splitlines() if not line.startswith("save_")))
    with pytest.raises(ValueError, match="pass checkpoint="):
        VLMoInference.from_training_config(str(yaml))
    with pytest.raises(FileNotFoundError, match="not found"):
        VLMoInference.from_training_config(str(yaml), checkpoint=str(tmp_path / "nope.pt"))
