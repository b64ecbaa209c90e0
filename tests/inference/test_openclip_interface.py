"""open_clip's contract: ``create_model_and_transforms`` -> ``(model, preprocess_train, preprocess_val)``,
``get_tokenizer``, and the model's encode / score methods equal to what retrieval and the tasks use."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from inference_helpers import ANSWERS, CAPTIONS

import vlmo_composer
from vlmo_composer import VLMoCLIP, VLMoInference, create_model_and_transforms, get_tokenizer
from vlmo_composer.data.tokenizer import PAD_ID, encode_text
from vlmo_composer.data.transforms import build_image_transform


@pytest.fixture(scope="module")
def loaded(full_model, tmp_path_factory):
    """The tiny model as a user gets it: exported, then loaded by path."""
    folder = VLMoInference(full_model, answers=ANSWERS).export(tmp_path_factory.mktemp("openclip") / "export")
    return folder, create_model_and_transforms(str(folder)), get_tokenizer(str(folder))


@pytest.fixture(scope="module")
def batch(loaded, images):
    _, (_, _, preprocess_val), tokenizer = loaded
    return torch.stack([preprocess_val(im.convert("RGB")) for im in images[:5]]), tokenizer(CAPTIONS)


def test_types_and_transforms_are_open_clips(loaded, images):
    _, (model, preprocess_train, preprocess_val), tokenizer = loaded
    assert isinstance(model, torch.nn.Module) and isinstance(model, VLMoCLIP) and not model.training
    assert model.answers == ANSWERS
    # val: the evaluation resize, deterministic; train: the training augmentation, random.
    assert preprocess_val.train is False and preprocess_train.train is True
    assert preprocess_train.randaugment is not None and preprocess_train.scale == (0.5, 1.0)
    image = images[0].convert("RGB")
    assert torch.equal(preprocess_val(image), build_image_transform(32, train=False)(image))
    assert torch.equal(preprocess_val(image), preprocess_val(image))
    crops = [preprocess_train(image, np.random.default_rng(seed)) for seed in range(3)]
    assert crops[0].shape == (3, 32, 32) and not torch.equal(crops[0], crops[1])
    # A size name without weights is a randomly initialised model (open_clip's create_model(name)).
    random_model, _, random_val = create_model_and_transforms("tiny")
    assert random_model.config.max_text_len == 8 and random_val.image_size == 32


def test_tokenizer_returns_the_training_ids_and_its_padding_is_the_mask(loaded):
    folder, (model, _, _), tokenizer = loaded
    tokens = tokenizer(CAPTIONS)
    assert tokens.shape == (len(CAPTIONS), 16) and tokens.dtype == torch.long  # [N, context_length]
    assert tokenizer("two blue spheres").shape == (1, 16)
    expected = encode_text(CAPTIONS, 16)
    assert torch.equal(tokens, expected["input_ids"])
    assert tokenizer.pad_token_id == model.pad_token_id == PAD_ID
    assert torch.equal(model.text_mask(tokens), expected["attention_mask"])  # derived mask = the tokenizer's
    assert get_tokenizer("base").context_length == 40 and get_tokenizer().context_length == 40
    assert vlmo_composer.get_tokenizer is get_tokenizer


def test_encoders_are_the_retrieval_features(full_model, loaded, batch, images):
    _, (model, _, _), _ = loaded
    pixels, tokens = batch
    api = VLMoInference(full_model)
    mask = encode_text(CAPTIONS, 16)["attention_mask"]
    with torch.no_grad():
        image_features = model.encode_image(pixels, normalize=True)
        text_features = model.encode_text(tokens, normalize=True)
        raw_image, raw_text = model.encode_image(pixels), model.encode_text(tokens)
        # What retrieval evaluation computes (tasks/retrieval_eval.py) and what the task helper returns.
        assert torch.equal(image_features, full_model.encode_image(pixels))
        assert torch.equal(text_features, full_model.encode_text(tokens, mask))
        features, text_again, scale = model(pixels, tokens)
    assert torch.equal(image_features, api.encode_images(images[:5]))
    assert torch.equal(text_features, api.encode_texts(CAPTIONS))
    assert torch.equal(features, image_features) and torch.equal(text_again, text_features)
    # normalize=False is the projection itself; normalize=True its unit rows.
    assert torch.allclose(image_features.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert torch.allclose(text_features.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert not torch.allclose(raw_image.norm(dim=-1), torch.ones(5), atol=1e-2)
    assert torch.equal(F.normalize(raw_image, dim=-1), image_features)
    assert torch.equal(F.normalize(raw_text, dim=-1), text_features)
    # logit_scale is the model's own parameter (log scale), the forward's third output its exp.
    assert isinstance(model.logit_scale, torch.nn.Parameter)
    assert model.logit_scale is model.vlmo.logit_scale and torch.equal(model.logit_scale, full_model.logit_scale)
    assert torch.equal(scale, full_model.logit_scale.exp())


def test_fusion_scores_are_the_task_scores(full_model, loaded, batch, images):
    _, (model, _, _), _ = loaded
    pixels, tokens = batch
    api = VLMoInference(full_model, answers=ANSWERS)
    mask = encode_text(CAPTIONS, 16)["attention_mask"]
    with torch.no_grad():
        itm = model.itm_score(pixels, tokens)
        assert torch.equal(itm, full_model.match_scores(tokens, mask, pixels))  # the re-ranking score
        pooled = model.encode_fused(pixels, tokens)
        assert pooled.shape == (5, 64) and torch.equal(pooled, full_model.fuse(tokens, mask, pixels).pooled)
        vqa = model.vqa_logits(pixels, tokens)
        nlvr2 = model.nlvr2_logits(pixels, pixels.roll(1, 0), tokens)
    assert torch.allclose(itm, api.itm_scores(images[:5], CAPTIONS).diagonal(), atol=1e-6)
    assert torch.allclose(vqa, api.vqa_logits(images[:5], CAPTIONS), atol=1e-6)
    right = [images[(i - 1) % 5] for i in range(5)]
    assert torch.allclose(nlvr2, api.nlvr2_logits(images[:5], right, CAPTIONS), atol=1e-6)


def test_sources_that_name_their_own_weights_refuse_pretrained(loaded, tmp_path):
    folder, _, _ = loaded
    with pytest.raises(ValueError, match="names its own weights"):
        create_model_and_transforms(str(folder), pretrained=str(folder))
    path = tmp_path / "weights.pt"
    torch.save(VLMoInference.from_pretrained(folder).model.state_dict(), path)
    with pytest.raises(ValueError, match=r"create_model_and_transforms\(SIZE, pretrained=PATH\)"):
        create_model_and_transforms(str(path))
