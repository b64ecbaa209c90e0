"""Task helpers over :class:`~vlmo_composer.inference.VLMoCLIP`: galleries and files in, answers out.

:class:`VLMoInference` takes images as PIL images, file paths (``str`` or ``Path``),
bytes or pixel tensors and texts as strings (:mod:`.inputs`), batches them, runs without
gradients (under CUDA autocast when asked) and returns results on the CPU in
float32, so galleries of any size stay off the accelerator and results compare
across devices. Retrieval (with ITM re-ranking), zero-shot classification, VQA
answers and NLVR2 are each a few lines over the model's own methods.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from transformers import PreTrainedTokenizerBase

from vlmo_composer.data.tokenizer import get_tokenizer
from vlmo_composer.data.transforms import ImageTransform, build_image_transform
from vlmo_composer.evaluation.rerank import rerank_candidates, reranked_scores
from vlmo_composer.evaluation.zeroshot_classifier import (
    ZeroShotClassifier,
    build_zero_shot_classifier,
    load_class_names,
    load_templates,
)
from vlmo_composer.inference.factory import LoadedModel, PathOrList, export_model, load_model
from vlmo_composer.inference.inputs import Images, Texts, image_list, pixel_tensor, tokenize
from vlmo_composer.inference.model import VLMoCLIP
from vlmo_composer.inference.model_card import RunSource
from vlmo_composer.inference.tokenizer import VLMoTokenizer
from vlmo_composer.model import VLMo, VLMoConfig


@dataclass
class RetrievalHits:
    """The top ``k`` gallery entries of each query, best first.

    ``scores`` are cosine similarities, or with re-ranking ``ITM match logit +
    cosine`` for the re-ranked ones (the rule of :mod:`vlmo_composer.evaluation.rerank`).
    """

    indices: torch.Tensor  # [Q, k] rows of the gallery
    scores: torch.Tensor  # [Q, k] float32
    direction: str  # "text->image" or "image->text"


@dataclass
class NLVR2Prediction:
    labels: list[bool]  # is the sentence true of the image pair
    probabilities: torch.Tensor  # [N] P(True), float32


class VLMoInference:
    """A :class:`VLMoCLIP` in eval mode with its preprocessing, tokenizer and answer vocabulary.

    Args:
        model: the network, as a :class:`VLMoCLIP` or a bare :class:`VLMo` (moved to
            ``device`` and put in eval mode; ``.model`` is the :class:`VLMo`, ``.clip`` the module).
        tokenizer: defaults to the bundled BERT uncased vocabulary.
        answers: VQA answer strings in label order (needed by :meth:`answer_questions`;
            default: the model's own).
        device: where the forward passes run.
        dtype: compute precision. Weights stay float32; ``bfloat16``/``float16``
            run under autocast, which only CUDA supports here.
    """

    def __init__(
        self,
        model: Union[VLMo, VLMoCLIP],
        tokenizer: Union[PreTrainedTokenizerBase, VLMoTokenizer, None] = None,
        answers: Optional[Sequence[str]] = None,
        device: Union[str, torch.device] = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.device = torch.device(device)
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
        if dtype != torch.float32 and self.device.type != "cuda":
            raise ValueError(f"dtype {dtype} runs under CUDA autocast; on {self.device.type} use float32")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device} requested but CUDA is not available")
        self.dtype = dtype
        self.run: Optional[RunSource] = None  # the training run the weights came from (the model card says)
        self.checkpoint: Optional[dict] = None  # the weights as loaded: path, kind, a checkpoint's step (batch), data
        if isinstance(tokenizer, VLMoTokenizer):
            tokenizer = tokenizer.tokenizer
        self.tokenizer: PreTrainedTokenizerBase = tokenizer if tokenizer is not None else get_tokenizer()
        if isinstance(model, VLMo):
            model = VLMoCLIP(model, self.tokenizer.pad_token_id, answers)
        elif answers is not None:
            model = VLMoCLIP(model.vlmo, model.pad_token_id, answers)
        self.clip: VLMoCLIP = model.to(self.device).eval()
        self.model: VLMo = self.clip.vlmo
        self.preprocess: ImageTransform = build_image_transform(self.config.image_size, train=False)

    @property
    def config(self) -> VLMoConfig:
        return self.model.config

    @property
    def answers(self) -> Optional[list[str]]:
        return self.clip.answers

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        source: Union[str, os.PathLike],
        kind: str = "auto",
        size: Union[str, VLMoConfig, None] = None,
        image_size: Optional[int] = None,
        answer_vocab: Optional[PathOrList] = None,
        tokenizer: Union[str, PreTrainedTokenizerBase, None] = None,
        device: Union[str, torch.device] = "cpu",
        dtype: torch.dtype = torch.float32,
        weights: Optional[str] = None,
        **model_overrides: Any,
    ) -> "VLMoInference":
        """Load a source of :mod:`vlmo_composer.inference.factory` (``size`` names the architecture of a
        file; see :func:`~vlmo_composer.inference.factory.load_model` for the rest).

        ``tokenizer``: a tokenizer or a name/path for transformers (exported folders carry
        theirs; default: the bundled BERT uncased vocabulary).
        """
        if size is None:
            loaded = load_model(source, kind=kind, image_size=image_size, answer_vocab=answer_vocab,
                                weights=weights, **model_overrides)
        else:
            loaded = load_model(size, source, kind=kind, image_size=image_size, answer_vocab=answer_vocab,
                                weights=weights, **model_overrides)
        return cls._from_loaded(loaded, tokenizer, device, dtype)

    @classmethod
    def from_training_config(
        cls,
        yaml_path: str,
        checkpoint: Optional[str] = None,
        overrides: Sequence[str] = (),
        device: Union[str, torch.device] = "cpu",
        dtype: torch.dtype = torch.float32,
        weights: Optional[str] = None,
    ) -> "VLMoInference":
        """The exact model a training YAML built, with the weights of one of its Composer checkpoints.

        ``checkpoint`` defaults to the run's ``latest-rank0.pt`` under ``save_folder``
        (as ``eval.py``); it is unpickled, so point it only at checkpoints you trust.
        A VQA task's ``answer_vocab`` comes along. ``weights``: ``"ema"`` (default when
        the run had EMA) or ``"raw"``; :meth:`export` writes the set loaded here.
        """
        loaded = load_model(yaml_path, checkpoint, weights=weights, overrides=overrides)
        inference = cls._from_loaded(loaded, None, device, dtype)
        inference.run = RunSource(str(yaml_path), tuple(overrides), loaded.checkpoint["path"],
                                  loaded.checkpoint.get("batch"))
        return inference

    @classmethod
    def _from_loaded(
        cls, loaded: LoadedModel, tokenizer: Union[str, PreTrainedTokenizerBase, None],
        device: Union[str, torch.device], dtype: torch.dtype,
    ) -> "VLMoInference":
        tokenizer = loaded.tokenizer if tokenizer is None else tokenizer
        if tokenizer is None or isinstance(tokenizer, str):
            tokenizer = get_tokenizer(tokenizer)
        inference = cls(loaded.vlmo, tokenizer, loaded.answers, device, dtype)
        inference.checkpoint = loaded.checkpoint
        return inference

    # ------------------------------------------------------------------ inputs
    def tokenize(self, texts: Texts) -> dict[str, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` ``[N, max_text_len]`` (see :func:`.inputs.tokenize`)."""
        return tokenize(texts, self.config, self.tokenizer)

    def _image_list(self, images: Images) -> Union[torch.Tensor, list]:
        return image_list(images, self.config)

    def _pixels(self, images: Union[torch.Tensor, list], rows: Sequence[int]) -> torch.Tensor:
        if torch.is_tensor(images):
            return images[torch.as_tensor(rows, dtype=torch.long)].to(self.device, torch.float32)
        return torch.stack([pixel_tensor(images[i], i, self.preprocess, self.config) for i in rows]).to(self.device)

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        autocast = (
            torch.autocast(self.device.type, dtype=self.dtype)
            if self.dtype != torch.float32
            else contextlib.nullcontext()
        )
        # no_grad, not inference_mode: the relative-position indices are cached process-wide,
        # and inference tensors cached here would break a later training step.
        with torch.no_grad(), autocast:
            yield

    def _require(self, present: bool, what: str, head: str) -> None:
        if not present:
            raise ValueError(
                f"{what} needs the {head}, which this model ({self.config.name}) lacks: load a checkpoint "
                "trained with it"
            )

    # ------------------------------------------------------------------ dual encoder
    def encode_images(self, images: Images, batch_size: int = 64) -> torch.Tensor:
        """L2-normalised ITC embeddings ``[N, D]`` of PIL images, paths, bytes or pixel tensors."""
        self._require(self.config.itc_head, "encode_images", "ITC head (itc_image_proj)")
        images = self._image_list(images)
        out = []
        for rows in _batches(len(images), batch_size):
            pixels = self._pixels(images, rows)
            with self._running():
                out.append(self.clip.encode_image(pixels, normalize=True).float().cpu())
        return torch.cat(out)

    def encode_texts(self, texts: Texts, batch_size: int = 256) -> torch.Tensor:
        """L2-normalised ITC embeddings ``[N, D]`` of strings (or tokenised ids)."""
        self._require(self.config.itc_head, "encode_texts", "ITC head (itc_text_proj)")
        tokens = self.tokenize(texts)
        out = []
        for rows in _batches(len(tokens["input_ids"]), batch_size):
            ids, mask = (tokens[k][rows].to(self.device) for k in ("input_ids", "attention_mask"))
            with self._running():
                out.append(self.clip.encode_text(ids, normalize=True, attention_mask=mask).float().cpu())
        return torch.cat(out)

    def similarity(self, images_or_features: Any, texts_or_features: Any) -> torch.Tensor:
        """Cosine similarities ``[N_images, N_texts]``; a 2-D float tensor is taken as embeddings."""
        image_feats = self._features(images_or_features, self.encode_images, "images")
        text_feats = self._features(texts_or_features, self.encode_texts, "texts")
        return image_feats @ text_feats.T

    def _features(self, value: Any, encode: Callable, what: str) -> torch.Tensor:
        if torch.is_tensor(value) and value.ndim == 2 and value.is_floating_point():
            if value.shape[1] != self.config.hidden_size:
                raise ValueError(
                    f"{what}: embeddings of width {value.shape[1]} do not match the model's {self.config.hidden_size}"
                )
            return value.float().cpu()
        return encode(value)

    # ------------------------------------------------------------------ ITM and retrieval
    def itm_scores(self, images: Images, texts: Texts, batch_size: int = 64) -> torch.Tensor:
        """ITM match logits ``[N_images, N_texts]`` of every (image, text) pair (fusion encoder)."""
        self._require(self.config.itm_head, "itm_scores", "ITM head (itm_score)")
        tokens, images = self.tokenize(texts), self._image_list(images)
        num_images, num_texts = len(images), len(tokens["input_ids"])
        image_rows = torch.arange(num_images).repeat_interleave(num_texts)
        text_rows = torch.arange(num_texts).repeat(num_images)
        logits = self._fused_head(tokens, images, text_rows, image_rows, self._match_logit, batch_size)
        return logits.view(num_images, num_texts)

    def _match_logit(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.model.itm_logits(pooled)[:, 1]

    def retrieve_images(self, texts: Texts, images: Images, k: int = 5, rerank_k: Optional[int] = None) -> RetrievalHits:
        """The top ``k`` of the gallery ``images`` for each text query (``images`` may be paths)."""
        tokens, images = self.tokenize(texts), self._image_list(images)
        scores = self.encode_texts(tokens) @ self.encode_images(images).T
        return self._ranked(scores, tokens, images, k, rerank_k, text_queries=True)

    def retrieve_texts(self, images: Images, texts: Texts, k: int = 5, rerank_k: Optional[int] = None) -> RetrievalHits:
        """The top ``k`` of the gallery ``texts`` for each image query."""
        tokens, images = self.tokenize(texts), self._image_list(images)
        scores = self.encode_images(images) @ self.encode_texts(tokens).T
        return self._ranked(scores, tokens, images, k, rerank_k, text_queries=False)

    def _ranked(
        self, scores: torch.Tensor, tokens: dict, images: Union[torch.Tensor, list], k: int,
        rerank_k: Optional[int], text_queries: bool,
    ) -> RetrievalHits:
        """Dual-encoder top ``k``; with ``rerank_k`` each query's top ``rerank_k`` re-scored by ITM + cosine
        (:mod:`vlmo_composer.evaluation.rerank`: past ``rerank_k`` the dual order stays)."""
        num_gallery = scores.shape[1]
        if not 1 <= k <= num_gallery:
            raise ValueError(f"k={k} must lie in [1, {num_gallery}] (the gallery size)")
        direction = "text->image" if text_queries else "image->text"
        if rerank_k is None:
            top = scores.topk(k, dim=1)
            return RetrievalHits(top.indices, top.values, direction)
        if not 1 <= rerank_k <= num_gallery:
            raise ValueError(f"rerank_k={rerank_k} must lie in [1, {num_gallery}] (the gallery size)")
        self._require(self.config.itm_head, "re-ranking", "ITM head (itm_score)")
        candidates = rerank_candidates(scores, rerank_k)  # [Q, R]
        query_rows = torch.arange(len(scores))[:, None].expand_as(candidates).reshape(-1)
        text_rows, image_rows = query_rows, candidates.reshape(-1)
        if not text_queries:
            text_rows, image_rows = image_rows, text_rows
        itm = self._fused_head(tokens, images, text_rows, image_rows, self._match_logit)
        top = reranked_scores(scores, candidates, itm.view_as(candidates)).topk(k, dim=1)
        return RetrievalHits(top.indices, top.values.float(), direction)

    # ------------------------------------------------------------------ zero-shot classification
    def zero_shot_classifier(
        self, class_names: Union[str, Sequence[str]] = "imagenet1k", templates: Union[str, Sequence[str]] = "openai",
        classes_per_batch: int = 10,
    ) -> ZeroShotClassifier:
        """Class embeddings from prompts (open_clip's recipe): every template filled with each class name,
        encoded, averaged over templates and re-normalised. Names: ``imagenet1k`` / ``openai`` (shipped),
        a text file (one per line), or a list."""
        return build_zero_shot_classifier(self.encode_texts, load_class_names(class_names), load_templates(templates),
                                          classes_per_batch)

    def classify(self, images: Images, classifier: ZeroShotClassifier, batch_size: int = 64) -> torch.Tensor:
        """Cosine logits ``[N, num_classes]`` of images against a :meth:`zero_shot_classifier`."""
        return self.encode_images(images, batch_size) @ classifier.weights

    def _fused_head(
        self,
        tokens: dict[str, torch.Tensor],
        images: Union[torch.Tensor, list],
        text_rows: torch.Tensor,
        image_rows: torch.Tensor,
        head: Callable[[torch.Tensor], torch.Tensor],
        batch_size: int = 64,
    ) -> torch.Tensor:
        """``head(pooled)`` of the fusion encoder on the pairs ``(text_rows[i], image_rows[i])``."""
        out = []
        for rows in _batches(len(text_rows), batch_size):
            t, i = text_rows[rows], image_rows[rows]
            pixels = self._pixels(images, i.tolist())
            ids, mask = (tokens[key][t].to(self.device) for key in ("input_ids", "attention_mask"))
            with self._running():
                out.append(head(self.clip.encode_fused(pixels, ids, mask)).float().cpu())
        return torch.cat(out)

    # ------------------------------------------------------------------ VQA
    def vqa_logits(self, images: Images, questions: Texts, batch_size: int = 32) -> torch.Tensor:
        """VQA head logits ``[N, num_labels]`` for question ``i`` about image ``i``."""
        self._require(self.config.vqa_num_labels > 0, "VQA", "VQA head (vqa_classifier)")
        tokens, images = self.tokenize(questions), self._image_list(images)
        rows = _paired_rows(len(images), len(tokens["input_ids"]), "images", "questions")
        return self._fused_head(tokens, images, rows, rows, self.model.vqa_logits, batch_size)

    def answer_questions(self, images: Images, questions: Texts, batch_size: int = 32) -> list[str]:
        """The highest-scoring answer string for each (image, question) pair."""
        if self.answers is None and self.config.vqa_num_labels > 0:
            raise ValueError(
                "no answer vocabulary: pass answer_vocab= (the answer_vocab.json the VQA data was prepared with); "
                "vqa_logits works without it"
            )
        logits = self.vqa_logits(images, questions, batch_size)
        return [self.answers[i] for i in logits.argmax(-1).tolist()]

    # ------------------------------------------------------------------ NLVR2
    def nlvr2_logits(
        self, left_images: Images, right_images: Images, sentences: Texts, batch_size: int = 32
    ) -> torch.Tensor:
        """(False, True) logits ``[N, 2]``: two fusion passes, the right image with modality id 2."""
        self._require(self.config.nlvr2_head, "NLVR2", "NLVR2 head (nlvr2_classifier)")
        tokens = self.tokenize(sentences)
        left, right = self._image_list(left_images), self._image_list(right_images)
        _paired_rows(len(left), len(right), "left images", "right images")
        _paired_rows(len(left), len(tokens["input_ids"]), "image pairs", "sentences")
        out = []
        for rows in _batches(len(left), batch_size):
            ids, mask = (tokens[key][rows].to(self.device) for key in ("input_ids", "attention_mask"))
            pixels_left, pixels_right = self._pixels(left, rows), self._pixels(right, rows)
            with self._running():
                out.append(self.clip.nlvr2_logits(pixels_left, pixels_right, ids, mask).float().cpu())
        return torch.cat(out)

    def predict_nlvr2(
        self, left_images: Images, right_images: Images, sentences: Texts, batch_size: int = 32
    ) -> NLVR2Prediction:
        """Is each sentence true of its image pair (argmax, as the accuracy metric decides)."""
        logits = self.nlvr2_logits(left_images, right_images, sentences, batch_size)
        return NLVR2Prediction([bool(x) for x in (logits.argmax(-1) == 1).tolist()], logits.softmax(-1)[:, 1])

    # ------------------------------------------------------------------ export
    def export(self, folder: Union[str, os.PathLike], overwrite: bool = False, timm: bool = False) -> Path:
        """Write a folder that loads back to bit-identical outputs, a Hub repository as it is (see
        :func:`~vlmo_composer.inference.factory.export_model`); loaded by :meth:`from_training_config`,
        its model card records the run's config, data and last evaluation."""
        return export_model(self.model, folder, self.tokenizer, self.answers, overwrite, timm, self.run)


# ---------------------------------------------------------------------- helpers
def _batches(n: int, batch_size: int) -> Iterator[list[int]]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, n, batch_size):
        yield list(range(start, min(start + batch_size, n)))


def _paired_rows(n_a: int, n_b: int, what_a: str, what_b: str) -> torch.Tensor:
    if n_a != n_b:
        raise ValueError(f"{n_a} {what_a} but {n_b} {what_b}: they pair one to one")
    return torch.arange(n_a)
