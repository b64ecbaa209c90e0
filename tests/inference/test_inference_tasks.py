"""What the inference API computes: embeddings, retrieval with re-ranking, VQA, NLVR2, and its input checks."""

from __future__ import annotations

import pytest
import torch
from inference_helpers import ANSWERS, CAPTIONS, TINY_MODEL, randomised, tiny_config

from vlmo_composer import VLMo
from vlmo_composer.data.tokenizer import encode_text
from vlmo_composer.data.transforms import build_image_transform
from vlmo_composer.data.vqa_answers import answer_vocab_to_json
from vlmo_composer.inference import VLMoInference
from vlmo_composer.tasks import NLVR2Task, VQATask
from vlmo_composer.tasks.nlvr2 import NLVR2Config
from vlmo_composer.tasks.vqa import VQAConfig


@pytest.fixture(scope="module")
def api(full_model) -> VLMoInference:
    return VLMoInference(full_model, answers=ANSWERS)


def pixels(api: VLMoInference, images) -> torch.Tensor:
    return torch.stack([api.preprocess(im.convert("RGB")) for im in images])


def test_inputs_are_prepared_as_in_training(api, images, tmp_path):
    reference = build_image_transform(32, train=False)
    assert torch.equal(api.preprocess(images[0]), reference(images[0]))
    tokens = api.tokenize(CAPTIONS)
    expected = encode_text(CAPTIONS, 16)
    assert torch.equal(tokens["input_ids"], expected["input_ids"])
    assert torch.equal(tokens["attention_mask"], expected["attention_mask"])

    from_pil = api.encode_images(images)
    assert torch.equal(from_pil, api.encode_images(pixels(api, images)))
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        image.save(paths[-1])  # lossless: the decoded file is the same image
    assert torch.equal(api.encode_images(paths), from_pil)
    assert torch.equal(api.encode_images([p.read_bytes() for p in paths]), from_pil)
    single = api.encode_images(str(paths[2]))  # one image, as a path string
    assert single.shape == (1, 64) and torch.allclose(single, from_pil[2:3], atol=1e-6)


def test_embeddings_are_normalised_and_do_not_depend_on_batching(api, images):
    image_feats, text_feats = api.encode_images(images), api.encode_texts(CAPTIONS)
    assert image_feats.shape == (6, 64) and text_feats.shape == (5, 64)
    assert image_feats.dtype == torch.float32 and image_feats.device.type == "cpu"
    assert torch.allclose(image_feats.norm(dim=-1), torch.ones(6), atol=1e-5)
    assert torch.allclose(api.encode_images(images, batch_size=2), image_feats, atol=1e-6)
    assert torch.allclose(api.encode_texts(CAPTIONS, batch_size=1), text_feats, atol=1e-6)
    assert torch.allclose(api.encode_texts("two blue spheres"), text_feats[1:2], atol=1e-6)
    assert not torch.allclose(image_feats[0], image_feats[1], atol=1e-3)  # inputs reach the output


def test_similarity_from_inputs_or_embeddings(api, images):
    image_feats, text_feats = api.encode_images(images), api.encode_texts(CAPTIONS)
    expected = image_feats @ text_feats.T
    assert torch.equal(api.similarity(images, CAPTIONS), expected)
    assert torch.equal(api.similarity(image_feats, text_feats), expected)
    assert torch.equal(api.similarity(images, text_feats), expected)
    with pytest.raises(ValueError, match="width 32 do not match the model's 64"):
        api.similarity(image_feats[:, :32], text_feats)


def match_scores(model: VLMo, api: VLMoInference, images, captions) -> torch.Tensor:
    """``[captions, images]`` ITM match logit + cosine, every pair fused on its own."""
    tokens, pix = api.tokenize(captions), pixels(api, images)
    cosine = api.encode_texts(captions) @ api.encode_images(images).T
    out = torch.empty(len(captions), len(images))
    with torch.no_grad():
        for t in range(len(captions)):
            for i in range(len(images)):
                fused = model.fuse(tokens["input_ids"][t:t + 1], tokens["attention_mask"][t:t + 1], pix[i:i + 1])
                out[t, i] = model.itm_logits(fused.pooled)[0, 1]
    return out + cosine


def test_retrieve_with_the_dual_encoder(api, images):
    image_feats, text_feats = api.encode_images(images), api.encode_texts(CAPTIONS)
    hits = api.retrieve_images(CAPTIONS, images, k=3)
    assert hits.direction == "text->image"
    top = (text_feats @ image_feats.T).topk(3, dim=1)
    assert torch.equal(hits.indices, top.indices) and torch.equal(hits.scores, top.values)
    hits = api.retrieve_texts(images, CAPTIONS, k=2)
    assert hits.direction == "image->text"
    top = (image_feats @ text_feats.T).topk(2, dim=1)
    assert torch.equal(hits.indices, top.indices) and torch.equal(hits.scores, top.values)


def test_rerank_scores_every_candidate_with_itm_plus_cosine(full_model, api, images):
    expected = match_scores(full_model, api, images, CAPTIONS)  # [texts, images]
    # Re-ranking the whole gallery is the exhaustive ITM + cosine ranking.
    hits = api.retrieve_images(CAPTIONS, images, k=6, rerank_k=6)
    assert torch.equal(hits.indices, expected.topk(6, dim=1).indices)
    assert torch.allclose(hits.scores, expected.topk(6, dim=1).values, atol=1e-5)
    dual_full = api.retrieve_images(CAPTIONS, images, k=6)
    assert (hits.indices[:, 0] != dual_full.indices[:, 0]).any()  # re-ranking changes answers
    # A shortlist: the best k of the dual encoder's top rerank_k, ordered by the fused score.
    dual = api.retrieve_images(CAPTIONS, images, k=3)
    short = api.retrieve_images(CAPTIONS, images, k=2, rerank_k=3)
    for q in range(len(CAPTIONS)):
        assert set(short.indices[q].tolist()) <= set(dual.indices[q].tolist())
        assert torch.allclose(short.scores[q], expected[q, short.indices[q]], atol=1e-5)
        assert short.scores[q, 0] >= short.scores[q, 1]
    assert not torch.allclose(short.scores, dual.scores[:, :2], atol=1e-3)  # the ITM logit counts
    again = api.retrieve_images(CAPTIONS, images, k=2, rerank_k=3)
    assert torch.equal(again.indices, short.indices) and torch.equal(again.scores, short.scores)
    # Image queries: the same rule from the other side.
    by_image = api.retrieve_texts(images, CAPTIONS, k=5, rerank_k=5)
    assert torch.equal(by_image.indices, expected.T.topk(5, dim=1).indices)


def test_itm_scores_and_rerank_past_k_keep_the_dual_order(full_model, api, images, tmp_path):
    cosine = api.encode_texts(CAPTIONS) @ api.encode_images(images).T
    itm = api.itm_scores(images, CAPTIONS)  # [images, texts]
    assert itm.shape == (6, 5)
    assert torch.allclose(itm.T + cosine, match_scores(full_model, api, images, CAPTIONS), atol=1e-5)
    # k past rerank_k: the top 2 re-ranked, then the dual encoder's order of the rest.
    hits = api.retrieve_images(CAPTIONS, images, k=6, rerank_k=2)
    dual = cosine.topk(6, dim=1).indices
    for q in range(len(CAPTIONS)):
        assert set(hits.indices[q, :2].tolist()) == set(dual[q, :2].tolist())
        assert hits.indices[q, 2:].tolist() == dual[q, 2:].tolist()
    # Strings in the image argument are image paths, never texts.
    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp_path / f"{i}.png"))
        image.save(paths[-1])
    by_path = api.retrieve_images(CAPTIONS, paths, k=3, rerank_k=3)
    assert torch.equal(by_path.indices, api.retrieve_images(CAPTIONS, images, k=3, rerank_k=3).indices)


def test_zero_shot_classifier_averages_normalised_prompts(api, images):
    classifier = api.zero_shot_classifier(["cube", "sphere", "cat"], ["a {}", "a photo of a {}."])
    assert classifier.weights.shape == (64, 3) and classifier.class_names == ["cube", "sphere", "cat"]
    prompts = api.encode_texts(["a cube", "a photo of a cube."]).mean(0)
    assert torch.allclose(classifier.weights[:, 0], prompts / prompts.norm(), atol=1e-6)
    assert torch.allclose(api.zero_shot_classifier(["cube", "sphere", "cat"], ["a {}", "a photo of a {}."],
                                                   classes_per_batch=1).weights, classifier.weights, atol=1e-6)
    logits = api.classify(images, classifier)
    assert torch.allclose(logits, api.encode_images(images) @ classifier.weights)
    imagenet = api.zero_shot_classifier("imagenet1k", ["{}"], classes_per_batch=250)
    assert imagenet.weights.shape == (64, 1000) and imagenet.class_names[:2] == ["tench", "goldfish"]
    with pytest.raises(ValueError, match="exactly one"):
        api.zero_shot_classifier(["cube"], ["no placeholder"])


def test_answers_match_the_vqa_task(images, tmp_path):
    vocab = tmp_path / "answer_vocab.json"
    vocab.write_text(answer_vocab_to_json(ANSWERS))
    torch.manual_seed(4)
    task = VQATask(VQAConfig(model=dict(TINY_MODEL), answer_vocab=str(vocab)))
    api = VLMoInference(randomised(task.model, seed=5), answers=task.answers)
    questions = ["what color is it?", "how many?", "is it a cat?", "what is it?", "is it red?"]
    tokens = api.tokenize(questions)
    batch = {**tokens, "pixel_values": pixels(api, images[:5]), "vqa_targets": torch.zeros(5, 5),
             "question_id": torch.arange(5)}
    with torch.no_grad():
        task_logits = task.eval_forward(batch)["logits"]
    logits = api.vqa_logits(images[:5], questions)
    assert torch.equal(logits, task_logits)
    answers = api.answer_questions(images[:5], questions)
    assert answers == task.predict_answers(logits) == [ANSWERS[i] for i in logits.argmax(-1).tolist()]


def test_nlvr2_matches_the_nlvr2_task(images):
    torch.manual_seed(6)
    task = NLVR2Task(NLVR2Config(model=dict(TINY_MODEL)))
    api = VLMoInference(randomised(task.model, seed=7))
    left, right = images[:4], images[2:6]
    sentences = CAPTIONS[:4]
    batch = {**api.tokenize(sentences), "pixel_values_0": pixels(api, left), "pixel_values_1": pixels(api, right)}
    with torch.no_grad():
        task_logits = task.logits(batch)
    logits = api.nlvr2_logits(left, right, sentences)
    assert torch.equal(logits, task_logits)
    prediction = api.predict_nlvr2(left, right, sentences)
    assert prediction.labels == (logits[:, 1] > logits[:, 0]).tolist()
    assert torch.allclose(prediction.probabilities, logits.softmax(-1)[:, 1])
    # The right image is a different modality (id 2): swapping the pair changes the answer's logits.
    assert not torch.allclose(api.nlvr2_logits(right, left, sentences), logits, atol=1e-4)


def test_missing_heads_are_named(images):
    itc_only = VLMoInference(VLMo(tiny_config(itm_head=False)))
    with pytest.raises(ValueError, match="VQA head"):
        itc_only.answer_questions(images[:1], ["what?"])
    with pytest.raises(ValueError, match="NLVR2 head"):
        itc_only.predict_nlvr2(images[:1], images[1:2], ["true?"])
    with pytest.raises(ValueError, match="ITM head"):
        itc_only.retrieve_images(CAPTIONS[:2], images[:2], k=1, rerank_k=2)
    vqa_only = VLMoInference(VLMo(tiny_config(itc_head=False, itc_vl_head=False, vqa_num_labels=5)))
    with pytest.raises(ValueError, match="ITC head"):
        vqa_only.encode_images(images)
    with pytest.raises(ValueError, match="answer_vocab="):
        vqa_only.answer_questions(images[:1], ["what?"])
    assert vqa_only.vqa_logits(images[:1], ["what?"]).shape == (1, 5)


def test_bad_inputs_are_named(api, images, tmp_path):
    with pytest.raises(ValueError, match="5 images but 4 questions"):
        api.answer_questions(images[:5], CAPTIONS[:4])
    with pytest.raises(ValueError, match="4 left images but 3 right images"):
        api.predict_nlvr2(images[:4], images[:3], CAPTIONS[:4])
    with pytest.raises(ValueError, match=r"\[N, 3, 32, 32\].*got \(2, 3, 64, 64\)"):
        api.encode_images(torch.zeros(2, 3, 64, 64))
    with pytest.raises(ValueError, match=r"image 1: .*\[N, 3, 32, 32\]"):
        api.encode_images([images[0], torch.zeros(3, 16, 16)])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        api.encode_images([images[0], broken])
    with pytest.raises(TypeError, match="image 0 is a int"):
        api.encode_images([3])
    with pytest.raises(TypeError, match=r"items \[1\] are not"):
        api.encode_texts(["fine", 7])
    with pytest.raises(ValueError, match="exceed max_text_len=16"):
        api.encode_texts({"input_ids": torch.ones(1, 20, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"k=7 must lie in \[1, 6\]"):
        api.retrieve_images(CAPTIONS, images, k=7)
    with pytest.raises(ValueError, match=r"rerank_k=7 must lie in \[1, 6\]"):
        api.retrieve_images(CAPTIONS, images, k=3, rerank_k=7)
    with pytest.raises(ValueError, match="no images"):
        api.encode_images([])


def test_precision_and_device_are_checked(full_model):
    with pytest.raises(ValueError, match="CUDA autocast"):
        VLMoInference(full_model, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="dtype must be"):
        VLMoInference(full_model, dtype=torch.float64)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_agrees_with_cpu_fp32(full_model, images):
    cpu = VLMoInference(full_model).encode_images(images)
    cpu_logits = VLMoInference(full_model).vqa_logits(images[:5], CAPTIONS)
    model = VLMo(full_model.config)
    model.load_state_dict(full_model.state_dict())
    fp32 = VLMoInference(model, device="cuda")
    assert torch.allclose(fp32.encode_images(images), cpu, atol=1e-4)
    bf16 = VLMoInference(model, device="cuda", dtype=torch.bfloat16)
    feats = bf16.encode_images(images)
    assert feats.dtype == torch.float32 and feats.device.type == "cpu"
    assert (feats * cpu).sum(-1).min() > 0.99  # cosine to the fp32 embedding
    assert torch.allclose(bf16.vqa_logits(images[:5], CAPTIONS), cpu_logits, atol=0.1)
    hits = bf16.retrieve_images(CAPTIONS, images, k=2, rerank_k=4)
    assert hits.indices.shape == (5, 2)
