"""Streaming datasets, one per MDS schema, returning dicts of tensors ready for default collation.

Every class is a ``streaming.StreamingDataset``: all of Streaming's keyword
arguments (``streams``, ``remote``, ``local``, ``split``, ``batch_size``,
``shuffle``, ``shuffle_seed``, ``shuffle_algo``, ``num_canonical_nodes``,
``predownload``, ``cache_limit``, ``epoch_size``, ``replication``, ...) pass
through unchanged; pass ``batch_size`` (the per-device batch) so that
mid-epoch resumption is exact.

Deterministic randomness. Every random choice made for a sample (caption,
crop, flip, RandAugment, MLM mask, image block mask) comes from a generator
seeded with ``(seed, epoch, sample index, purpose)``, never from worker RNG
state or visit order. A resumed run therefore produces exactly the samples
the uninterrupted run would have. The epoch is the one Streaming establishes
in ``__iter__`` (also after resuming from a checkpoint); datasets built with
``train=False`` always key with epoch 0, so every evaluation pass is
identical. Copies of a sample within one epoch (``repeat`` > 1 or an
up-sampling ``proportion``) share their draws for that epoch.

Epoch. One epoch is one pass over the dataset's sample list as Streaming
defines it: every stored row once, or the number of rows the streams'
``proportion`` / ``repeat`` / ``choose`` or ``epoch_size`` ask for. A row of
an image-text shard is an IMAGE with all of its captions, so an epoch is
counted in images, and each visit trains on one caption drawn uniformly at
random (a fresh draw every epoch); over epochs every caption gets used.

Corrupt samples. A sample whose image does not decode (or whose columns do
not parse, or that has no caption / empty text) is skipped: a warning names
the sample index and its stream, ``num_corrupt_samples`` counts them per
dataset copy (each DataLoader worker has its own), and the next index is
returned instead so batch shapes never change. Every returned sample carries
``corrupt_skipped`` (how many were skipped to produce it), so summing it over
batches gives the global count in the training process. More than
``MAX_CONSECUTIVE_CORRUPT`` corrupt samples in a row raise (the data is
broken, not a few files).

Corrupt shards. With ``validate_hash: xxh64`` (the recipes' setting) Streaming
checks every downloaded shard against the hash its index records and stops with
``Checksum failure: <shard>``; shards already in the local cache are checked
when the dataset is built (``cache_check``): a damaged cached copy is removed and
downloaded again, a damaged local-only shard stops the run naming the file.

Shapes. ``image_size`` and ``max_text_len`` (and ``patch_size`` for MIM
masks, ``num_labels`` for VQA) are required and have no defaults: the task's
model config owns them, and the train/eval builders pass its values
(``training.builders.derive_loader_shapes``). A dataset built without them
fails at once naming the argument, rather than quietly using another size.

Returned keys (``S`` image size, ``T`` max text length; ``sample_index`` is
the global index of the returned row over all streams):

==================  =====================================================================
dataset             keys
==================  =====================================================================
ImageTextDataset    pixel_values f32 [3,S,S]; input_ids, attention_mask i64 [T];
                    mlm_input_ids, mlm_labels i64 [T] (if mlm_prob > 0);
                    with ``captions="all"``: input_ids, attention_mask i64 [K,T] and
                    caption_mask bool [K] instead (K = max_captions, no MLM)
TextDataset         input_ids, attention_mask i64 [T]; mlm_input_ids, mlm_labels i64 [T]
                    (if mlm_prob > 0). Longer documents are truncated to T.
ImageDataset        pixel_values f32 [3,S,S]; mim_mask bool [P] (if mim_num_patches,
                    P = (S / patch_size)^2); label i64 [] (if with_labels)
VQADataset          pixel_values; input_ids, attention_mask i64 [T] (the question);
                    vqa_targets f32 [num_labels] (soft scores); question_id i64 [];
                    answers_json str (the raw annotator answers as a JSON list; "[]" for
                    test splits; a list after collation)
NLVR2Dataset        pixel_values_0, pixel_values_1 f32 [3,S,S]; input_ids, attention_mask
                    i64 [T]; label i64 []; identifier str (a list after collation)
all                 sample_index i64 []; corrupt_skipped i64 []
==================  =====================================================================
"""

from __future__ import annotations

import json
import logging
import os
from enum import IntEnum
from typing import Any, ClassVar, Iterator, Literal

import numpy as np
import torch
from streaming import StreamingDataset
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from vlmo_composer.data.cache_check import CorruptShardError, stream_caches, verify_stream_caches
from vlmo_composer.data.images import CorruptSampleError, decode_image
from vlmo_composer.data.masking import BlockwiseMaskGenerator, whole_word_mask
from vlmo_composer.data.schema import IMAGE, IMAGE_LABELED, IMAGE_TEXT, NLVR2, TEXT, VQA, Schema
from vlmo_composer.data.tokenizer import encode_text, get_tokenizer
from vlmo_composer.data.transforms import build_image_transform

log = logging.getLogger(__name__)

MAX_CONSECUTIVE_CORRUPT = 64
SHARD_HASH_ERRORS = ("Checksum failure", "Hash algorithm")  # Streaming's validate_hash errors


class Purpose(IntEnum):
    """Separate random streams per use, so turning one off does not shift the others."""

    CAPTION = 0
    IMAGE = 1
    IMAGE_1 = 2
    MLM = 3
    MIM = 4


class VLMoStreamingDataset(StreamingDataset):
    """Shared machinery: per-sample generators, epoch tracking, corrupt-sample skipping, column check."""

    schema: ClassVar[Schema]
    required_columns: ClassVar[tuple[str, ...]]
    _thread_failure: BaseException | None = None

    def __init__(self, *, train: bool = True, seed: int | None = None, **streaming_kwargs: Any) -> None:
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        if int(os.environ.get("LOCAL_RANK", "0")) == 0:  # one process per node touches the cache
            verify_stream_caches(stream_caches(streaming_kwargs))
        super().__init__(**streaming_kwargs)
        self.train = train
        self.seed = int(self.shuffle_seed if seed is None else seed)
        self.epoch = 0
        self.num_corrupt_samples = 0
        self._check_columns()

    # --- epoch and randomness -------------------------------------------------------------

    def _resume_incr_epoch(self) -> tuple[int, int]:
        # Streaming decides the epoch here (at the start of __iter__, in the worker), including
        # when it resumes from a checkpoint; remember it for __getitem__.
        epoch, sample_in_epoch = super()._resume_incr_epoch()
        self.epoch = epoch
        return epoch, sample_in_epoch

    def set_epoch(self, epoch: int) -> None:
        """For random access outside iteration; iteration sets the epoch itself."""
        self.epoch = int(epoch)

    def sample_rng(self, sample_id: int, purpose: Purpose) -> np.random.Generator:
        epoch = self.epoch if self.train else 0
        return np.random.default_rng([self.seed, epoch, int(sample_id), int(purpose)])

    def sample_torch_generator(self, sample_id: int, purpose: Purpose) -> torch.Generator:
        seed = int(self.sample_rng(sample_id, purpose).integers(2**62))
        return torch.Generator().manual_seed(seed)

    # --- samples --------------------------------------------------------------------------

    def build_sample(self, row: dict[str, Any], sample_id: int) -> dict[str, Any]:
        """Turn one decoded MDS row into the tensors of this dataset."""
        raise NotImplementedError

    def __getitem__(self, idx: int) -> dict[str, Any]:  # type: ignore[override]
        idx = int(idx)
        for skipped in range(MAX_CONSECUTIVE_CORRUPT + 1):
            sample_id = (idx + skipped) % self.num_samples
            try:
                sample = self.build_sample(self._read_row(sample_id), sample_id)
            except CorruptSampleError as err:
                self._record_corrupt(sample_id, err)
                continue
            sample["sample_index"] = torch.tensor(sample_id, dtype=torch.long)
            sample["corrupt_skipped"] = torch.tensor(skipped, dtype=torch.long)
            return sample
        raise RuntimeError(
            f"{type(self).__name__}: {MAX_CONSECUTIVE_CORRUPT + 1} consecutive corrupt samples from "
            f"index {idx} (stream {self.stream_name(idx)}); the shards look broken, see the warnings above"
        )

    def _read_row(self, sample_id: int) -> dict[str, Any]:
        try:
            return self.get_item(sample_id)
        except ValueError as err:  # a column that does not parse (bad json / utf-8) in the shard
            if str(err).startswith(SHARD_HASH_ERRORS):  # a whole shard is bad: stop, never skip past it
                raise CorruptShardError(f"{err} (stream {self.stream_name(sample_id)})") from err
            raise CorruptSampleError(f"cannot read the sample's columns: {err}") from err
        except RuntimeError:
            self._raise_thread_failure()
            raise

    # --- shard download failures -----------------------------------------------------------
    # Streaming (0.13) downloads shards in a thread; when that thread fails, iteration just
    # stops (a silently short epoch) and the next access says only "Background thread failed".
    def on_exception(self, future: Any) -> None:
        if not future.cancelled() and future.exception() is not None:
            self._thread_failure = future.exception()
        super().on_exception(future)

    def _raise_thread_failure(self) -> None:
        failure = self._thread_failure
        if isinstance(failure, ValueError) and str(failure).startswith(SHARD_HASH_ERRORS):
            # The same error whichever thread met the bad shard first (see _read_row).
            raise CorruptShardError(f"{type(self).__name__}: {failure}") from failure
        if failure is not None:
            raise RuntimeError(f"{type(self).__name__}: Streaming could not prepare a shard, the epoch cannot go "
                               f"on: {type(failure).__name__}: {failure}") from failure

    def __iter__(self) -> Iterator[dict[str, Any]]:
        yield from super().__iter__()
        self._raise_thread_failure()

    def _record_corrupt(self, sample_id: int, err: Exception) -> None:
        self.num_corrupt_samples += 1
        log.warning(
            "%s: skipping corrupt sample %d of stream %s: %s (%d skipped so far by this process)",
            type(self).__name__,
            sample_id,
            self.stream_name(sample_id),
            err,
            self.num_corrupt_samples,
        )

    def stream_name(self, sample_id: int) -> str:
        shard_id, _ = self.spanner[sample_id]
        stream = self.streams[int(self.stream_per_shard[shard_id])]
        where = stream.remote or stream.local
        return f"{where} (split {stream.split})" if stream.split else str(where)

    def _check_columns(self) -> None:
        """Fail at construction, naming the stream, when a stream lacks the columns we read."""
        for stream_id, stream in enumerate(self.streams):
            shard_ids = np.flatnonzero(self.stream_per_shard == stream_id)
            if not len(shard_ids):
                continue
            columns = getattr(self.shards[shard_ids[0]], "column_names", None)
            if columns is None:
                continue
            missing = sorted(set(self.required_columns) - set(columns))
            if missing:
                raise ValueError(
                    f"{type(self).__name__} reads schema '{self.schema.name}' but stream "
                    f"{stream.remote or stream.local} (split '{stream.split}') lacks columns {missing}; "
                    f"its shards have {sorted(columns)}"
                )

    # --- shared building blocks -------------------------------------------------------------

    def _init_image(
        self, image_size: int, randaugment: bool, hflip: bool, scale: tuple[float, float]
    ) -> None:
        self.image_size = image_size
        self.transform = build_image_transform(
            image_size, self.train, randaugment=randaugment, scale=tuple(scale), hflip=hflip
        )

    def _image(self, data: bytes, sample_id: int, purpose: Purpose = Purpose.IMAGE) -> Tensor:
        img = decode_image(data, draft_size=self.transform.draft_size)
        return self.transform(img, self.sample_rng(sample_id, purpose))

    def _init_text(self, max_text_len: int, mlm_prob: float, tokenizer_name: str | None) -> None:
        self.max_text_len = max_text_len
        self.mlm_prob = mlm_prob
        self.tokenizer_name = tokenizer_name
        tok = get_tokenizer(tokenizer_name)  # fails early on a bad name
        # Looked up once: len() of a fast tokenizer costs milliseconds.
        self._mlm_ids = {
            "mask_token_id": tok.mask_token_id,
            "vocab_size": len(tok),
            "special_ids": tuple(tok.all_special_ids),
        }

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return get_tokenizer(self.tokenizer_name)

    def _text(self, text: str | list[str], sample_id: int) -> dict[str, Tensor]:
        """Token ids and mask; with ``mlm_prob > 0`` also the whole-word-masked ids and labels."""
        enc = encode_text(text, self.max_text_len, self.tokenizer)
        out = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if self.mlm_prob > 0:
            out["mlm_input_ids"], out["mlm_labels"] = whole_word_mask(
                enc["input_ids"],
                enc["attention_mask"],
                enc["word_start"],
                mask_prob=self.mlm_prob,
                generator=self.sample_torch_generator(sample_id, Purpose.MLM),
                **self._mlm_ids,
            )
        return out


class ImageTextDataset(VLMoStreamingDataset):
    """Image-text rows (schema ``image_text``): one image, one caption drawn per visit.

    ``captions="all"`` (retrieval evaluation) returns every caption of the
    image instead, padded to ``max_captions`` rows with ``caption_mask``; an
    image with more captions raises rather than silently dropping some.
    Padding rows hold the empty caption (``[CLS] [SEP]``), so encoding them is
    harmless; drop their features with ``caption_mask``.
    """

    schema = IMAGE_TEXT
    required_columns = ("image", "captions")

    def __init__(
        self,
        *,
        image_size: int,
        train: bool = True,
        randaugment: bool = True,
        hflip: bool = True,
        scale: tuple[float, float] = (0.5, 1.0),
        max_text_len: int,
        mlm_prob: float = 0.15,
        tokenizer_name: str | None = None,
        captions: Literal["sample", "all"] = "sample",
        max_captions: int = 5,
        seed: int | None = None,
        **streaming_kwargs: Any,
    ) -> None:
        if captions not in ("sample", "all"):
            raise ValueError(f"captions must be 'sample' or 'all', got {captions!r}")
        if captions == "all" and mlm_prob > 0:
            raise ValueError("captions='all' is for retrieval evaluation: set mlm_prob=0")
        super().__init__(train=train, seed=seed, **streaming_kwargs)
        self.captions = captions
        self.max_captions = max_captions
        self._init_image(image_size, randaugment, hflip, scale)
        self._init_text(max_text_len, mlm_prob, tokenizer_name)

    def build_sample(self, row: dict[str, Any], sample_id: int) -> dict[str, Any]:
        captions = row["captions"]
        if not isinstance(captions, list) or not captions or not all(isinstance(c, str) for c in captions):
            raise CorruptSampleError(f"image {row.get('image_id')!r} has no usable captions: {captions!r}")
        sample = {"pixel_values": self._image(row["image"], sample_id)}
        if self.captions == "sample":
            choice = int(self.sample_rng(sample_id, Purpose.CAPTION).integers(len(captions)))
            sample.update(self._text(captions[choice], sample_id))
            return sample
        if len(captions) > self.max_captions:
            raise ValueError(
                f"image {row.get('image_id')!r} (sample {sample_id}) has {len(captions)} captions, "
                f"more than max_captions={self.max_captions}: raise max_captions"
            )
        padded = captions + [""] * (self.max_captions - len(captions))
        sample.update(self._text(padded, sample_id))
        sample["caption_mask"] = torch.arange(self.max_captions) < len(captions)
        return sample


class TextDataset(VLMoStreamingDataset):
    """Text-only rows (schema ``text``) for the language stage; documents truncated to ``max_text_len``."""

    schema = TEXT
    required_columns = ("text",)

    def __init__(
        self,
        *,
        max_text_len: int,
        mlm_prob: float = 0.15,
        tokenizer_name: str | None = None,
        train: bool = True,
        seed: int | None = None,
        **streaming_kwargs: Any,
    ) -> None:
        super().__init__(train=train, seed=seed, **streaming_kwargs)
        self._init_text(max_text_len, mlm_prob, tokenizer_name)

    def build_sample(self, row: dict[str, Any], sample_id: int) -> dict[str, Any]:
        text = row["text"]
        if not isinstance(text, str) or not text.strip():
            raise CorruptSampleError(f"empty text: {text!r}")
        return self._text(text, sample_id)


class ImageDataset(VLMoStreamingDataset):
    """Image-only rows (schema ``image`` or ``image_labeled``) for the vision stage.

    ``mim_num_patches`` turns on BEiT blockwise masking over the
    ``(image_size / patch_size)^2`` patch grid (BEiT: 75 of 196).
    """

    schema = IMAGE
    required_columns = ("image",)

    def __init__(
        self,
        *,
        image_size: int,
        train: bool = True,
        randaugment: bool = True,
        hflip: bool = True,
        scale: tuple[float, float] = (0.5, 1.0),
        with_labels: bool = False,
        mim_num_patches: int | None = None,
        patch_size: int | None = None,
        mim_min_patches: int = 16,
        mim_max_patches: int | None = None,
        seed: int | None = None,
        **streaming_kwargs: Any,
    ) -> None:
        if with_labels:
            self.schema, self.required_columns = IMAGE_LABELED, ("image", "label")
        super().__init__(train=train, seed=seed, **streaming_kwargs)
        self.with_labels = with_labels
        self._init_image(image_size, randaugment, hflip, scale)
        self.mask_generator = None
        if mim_num_patches:
            if patch_size is None:
                raise ValueError("mim_num_patches needs patch_size (the model's, task.model.patch_size)")
            if image_size % patch_size:
                raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
            self.mask_generator = BlockwiseMaskGenerator(
                image_size // patch_size, mim_num_patches, mim_min_patches, mim_max_patches
            )

    def build_sample(self, row: dict[str, Any], sample_id: int) -> dict[str, Any]:
        sample: dict[str, Any] = {"pixel_values": self._image(row["image"], sample_id)}
        if self.mask_generator is not None:
            sample["mim_mask"] = self.mask_generator(self.sample_rng(sample_id, Purpose.MIM))
        if self.with_labels:
            sample["label"] = torch.tensor(int(row["label"]), dtype=torch.long)
        return sample


class VQADataset(VLMoStreamingDataset):
    """VQA rows (schema ``vqa``): image, question and the dense soft-score target.

    Training and the VQA score use ``vqa_targets``; the official accuracy needs
    the raw annotator answers, carried as one JSON string per sample
    (``answers_json``) so that default collation keeps questions with different
    numbers of answers apart. Test splits carry ``"[]"``. A val question with no
    answer in the vocabulary has no labels: its target is all zeros.
    """

    schema = VQA
    required_columns = ("image", "question", "question_id", "answers", "labels", "scores")

    def __init__(
        self,
        *,
        num_labels: int,  # the answer vocabulary's size (from task.model.vqa_num_labels in a YAML)
        image_size: int,
        train: bool = True,
        randaugment: bool = True,
        hflip: bool = True,
        scale: tuple[float, float] = (0.5, 1.0),
        max_text_len: int,
        tokenizer_name: str | None = None,
        seed: int | None = None,
        **streaming_kwargs: Any,
    ) -> None:
        super().__init__(train=train, seed=seed, **streaming_kwargs)
        self.num_labels = num_labels
        self._init_image(image_size, randaugment, hflip, scale)
        self._init_text(max_text_len, 0.0, tokenizer_name)

    def build_sample(self, row: dict[str, Any], sample_id: int) -> dict[str, Any]:
        labels, scores = row["labels"], row["scores"]
        if not isinstance(labels, list) or not isinstance(scores, list) or len(labels) != len(scores):
            raise CorruptSampleError(
                f"question {row['question_id']}: labels {labels!r} do not match scores {scores!r}"
            )
        targets = torch.zeros(self.num_labels, dtype=torch.float32)
        if labels:
            index = torch.tensor(labels, dtype=torch.long)
            outside = [label for label in labels if not 0 <= label < self.num_labels]
            if outside:
                raise ValueError(
                    f"question {row['question_id']} (sample {sample_id}) has answer labels {outside} outside "
                    f"[0, {self.num_labels}): num_labels does not match the shards' answer vocabulary"
                )
            targets[index] = torch.tensor(scores, dtype=torch.float32)
        sample = {"pixel_values": self._image(row["image"], sample_id)}
        sample.update(self._text(row["question"], sample_id))
        sample["vqa_targets"] = targets
        sample["question_id"] = torch.tensor(int(row["question_id"]), dtype=torch.long)
        answers = row["answers"]
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise CorruptSampleError(f"question {row['question_id']}: answers {answers!r:.80} are not a list of str")
        sample["answers_json"] = json.dumps(answers)
        return sample


class NLVR2Dataset(VLMoStreamingDataset):
    """NLVR2 rows (schema ``nlvr2``): two images (independent augmentations), a sentence, a label."""

    schema = NLVR2
    required_columns = ("image_0", "image_1", "sentence", "label", "identifier")

    def __init__(
        self,
        *,
        image_size: int,
        train: bool = True,
        randaugment: bool = True,
        hflip: bool = True,
        scale: tuple[float, float] = (0.5, 1.0),
        max_text_len: int,
        tokenizer_name: str | None = None,
        seed: int | None = None,
        **streaming_kwargs: Any,
    ) -> None:
        super().__init__(train=train, seed=seed, **streaming_kwargs)
        self._init_image(image_size, randaugment, hflip, scale)
        self._init_text(max_text_len, 0.0, tokenizer_name)

    def build_sample(self, row: dict[str, Any], sample_id: int) -> dict[str, Any]:
        sample = {
            "pixel_values_0": self._image(row["image_0"], sample_id, Purpose.IMAGE),
            "pixel_values_1": self._image(row["image_1"], sample_id, Purpose.IMAGE_1),
        }
        sample.update(self._text(row["sentence"], sample_id))
        sample["label"] = torch.tensor(int(row["label"]), dtype=torch.long)
        sample["identifier"] = str(row["identifier"])
        return sample
