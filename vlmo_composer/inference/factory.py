"""Loading and exporting: a name or path -> a model, its transforms, its tokenizer (open_clip's factory).

``name_or_path`` is one of three things, and ``pretrained`` means the weights for it:

* a training YAML (``.yaml`` / ``.yml``): the exact model that run built; ``pretrained``
  one of its Composer checkpoints (default: its ``latest-rank0.pt``; unpickled, so trusted
  files only); the preprocessing follows its training loader;
* an architecture, a named size (``tiny``, ``small``, ``base``, ``base_plus``, ``large``) or a
  :class:`VLMoConfig`: ``pretrained`` a file of any :mod:`~vlmo_composer.checkpoints.sources`
  kind (official, composer with ``kind="composer"``, a pretrained name, ``https://``,
  ``s3://``), or ``None`` for a randomly initialised model (open_clip's ``create_model(name)``);
* a source that names its own architecture: a pretrained name (``list_pretrained()``), an
  exported (safetensors) folder, local, ``s3://`` or on the Hugging Face Hub
  (``hf-hub:org/name``); ``pretrained`` stays ``None``.

A local path wins over a size or pretrained name of the same spelling.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from transformers import PreTrainedTokenizerBase

from vlmo_composer.checkpoints.io import LoadReport
from vlmo_composer.checkpoints.pretrained import is_pretrained_name, is_url, pretrained_size
from vlmo_composer.checkpoints.safetensors_io import CONFIG_NAME, WEIGHTS_NAME, save_safetensors
from vlmo_composer.checkpoints.sources import build_model, fetch_source, local_copy
from vlmo_composer.checkpoints.timm_export import TIMM_CONFIG_NAME, TIMM_WEIGHTS_NAME, save_timm_beit, timm_beit_kwargs
from vlmo_composer.data.tokenizer import get_tokenizer as hf_tokenizer
from vlmo_composer.data.transforms import ImageTransform, build_image_transform
from vlmo_composer.data.vqa_answers import answer_vocab_from_json, answer_vocab_to_json
from vlmo_composer.inference.model import VLMoCLIP
from vlmo_composer.inference.model_card import README_NAME, RunSource, model_card, run_facts
from vlmo_composer.inference.tokenizer import VLMoTokenizer
from vlmo_composer.model import VLMo, VLMoConfig
from vlmo_composer.model.config import NAMED_CONFIGS

ANSWER_VOCAB_NAME = "answer_vocab.json"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"  # its presence marks exported tokenizer files
TRANSFORM_OPTIONS = ("randaugment", "hflip", "scale")  # the training loader's say in preprocess_train

Source = Union[str, os.PathLike]
PathOrList = Union[str, os.PathLike, Sequence[str]]


@dataclass
class LoadedModel:
    """What a source holds besides the weights."""

    vlmo: VLMo
    answers: Optional[list[str]] = None
    tokenizer: Optional[str] = None  # a folder or hub name for transformers; None: the bundled BERT
    train_transform: dict = field(default_factory=dict)  # ImageTransform options of a run's training loader
    checkpoint: Optional[dict] = None  # the weights as loaded: path, kind and a Composer checkpoint's step and data


def load_model(
    name_or_path: Union[Source, VLMoConfig],
    pretrained: Optional[Source] = None,
    *,
    kind: str = "auto",
    image_size: Optional[int] = None,
    answer_vocab: Optional[PathOrList] = None,
    weights: Optional[str] = None,
    overrides: Sequence[str] = (),
    **model_kwargs: Any,
) -> LoadedModel:
    """The network and what comes with it; see the module docstring for the arguments.

    ``weights``: for a Composer checkpoint of a run with EMA, ``"ema"`` (default) or ``"raw"``.
    ``overrides``: dotted YAML overrides (a training YAML only); ``model_kwargs``: other
    :class:`VLMoConfig` fields the training run changed.
    """
    if _is_training_yaml(name_or_path):
        if kind != "auto" or image_size is not None or answer_vocab is not None or model_kwargs:
            raise ValueError(f"{name_or_path}: a training YAML names its own model, size, kind and answer vocabulary")
        # Imported here so that inference alone never loads the training stack (Composer, Streaming).
        from vlmo_composer.evaluation.weights import trained_model

        vlmo, answers, checkpoint = trained_model(str(name_or_path), pretrained and str(pretrained), overrides, weights)
        _, options, tokenizer = _training_run(str(name_or_path), overrides)
        return LoadedModel(vlmo, answers, tokenizer, options, checkpoint)
    if overrides:
        raise ValueError("overrides= are dotted keys of a training YAML; pass VLMoConfig fields as keywords")
    if _is_architecture(name_or_path):
        if pretrained is None:
            config = _architecture(name_or_path, image_size, model_kwargs)
            return LoadedModel(VLMo(config), _read_answers(answer_vocab))
        report = LoadReport()
        vlmo = build_model(os.fspath(pretrained), kind, name_or_path, image_size, weights=weights, report=report,
                           **model_kwargs)
        return LoadedModel(vlmo, _read_answers(answer_vocab), checkpoint=report.record(os.fspath(pretrained), kind))
    if pretrained is not None:
        raise ValueError(
            f"{name_or_path} names its own weights; pretrained= goes with a size ({', '.join(NAMED_CONFIGS)}) "
            "or a training YAML"
        )
    size = pretrained_size(name_or_path)  # a pretrained name knows its architecture
    local, kind = fetch_source(name_or_path, kind)  # s3:// and https:// downloaded once, here
    if size is None and kind in ("official", "composer"):
        raise ValueError(
            f"{name_or_path}: a {kind} file does not record the model's shape; name it: "
            f"create_model_and_transforms(SIZE, pretrained=PATH) or from_pretrained(PATH, size=SIZE) (pass size=), "
            f"SIZE one of {', '.join(NAMED_CONFIGS)} or a VLMoConfig, with the training's model overrides"
        )
    report = LoadReport()
    vlmo = build_model(local, kind, size, image_size, weights=weights, report=report, **model_kwargs)
    folder = Path(local) if kind == "safetensors" else None
    if answer_vocab is None and folder is not None and (folder / ANSWER_VOCAB_NAME).exists():
        answer_vocab = str(folder / ANSWER_VOCAB_NAME)
    tokenizer = str(folder) if folder is not None and (folder / TOKENIZER_CONFIG_NAME).exists() else None
    return LoadedModel(vlmo, _read_answers(answer_vocab), tokenizer,
                       checkpoint=report.record(os.fspath(name_or_path), kind))


def create_model(
    name_or_path: Union[Source, VLMoConfig],
    pretrained: Optional[Source] = None,
    *,
    device: Union[str, torch.device] = "cpu",
    **kwargs: Any,
) -> VLMoCLIP:
    """The model as an ``nn.Module`` in eval mode (``.train()`` to fine-tune); ``kwargs`` as :func:`load_model`."""
    return _module(load_model(name_or_path, pretrained, **kwargs), device)


def create_model_and_transforms(
    name_or_path: Union[Source, VLMoConfig],
    pretrained: Optional[Source] = None,
    *,
    device: Union[str, torch.device] = "cpu",
    **kwargs: Any,
) -> tuple[VLMoCLIP, ImageTransform, ImageTransform]:
    """``(model, preprocess_train, preprocess_val)`` as open_clip returns them.

    ``preprocess_train`` is the training augmentation (random resized crop, flip,
    RandAugment; a training YAML's own settings), ``preprocess_val`` the deterministic
    evaluation resize; both map a PIL image to a ``[3, S, S]`` tensor. Texts go through
    ``get_tokenizer(name_or_path)``.
    """
    loaded = load_model(name_or_path, pretrained, **kwargs)
    model = _module(loaded, device)
    return (model, *image_transforms(model.config.image_size, loaded.train_transform))


def image_transforms(image_size: int, train_options: Optional[dict] = None) -> tuple[ImageTransform, ImageTransform]:
    """``(train, val)`` transforms at ``image_size``; ``train_options`` from a training loader."""
    options = {k: v for k, v in (train_options or {}).items() if k in TRANSFORM_OPTIONS}
    if "scale" in options:
        options["scale"] = tuple(options["scale"])
    return build_image_transform(image_size, train=True, **options), build_image_transform(image_size, train=False)


def get_tokenizer(
    name_or_path: Union[Source, VLMoConfig, None] = None, context_length: Optional[int] = None
) -> VLMoTokenizer:
    """The tokenizer of a model named as in :func:`create_model_and_transforms`, padding to its
    ``max_text_len`` (``context_length`` overrides; a source that does not record it gets the
    official 40). ``None``: the bundled BERT uncased vocabulary."""
    length, name = VLMoConfig().max_text_len, None
    if name_or_path is None:
        pass
    elif _is_training_yaml(name_or_path):
        config, _, name = _training_run(str(name_or_path), ())
        length = config.max_text_len
    elif _is_architecture(name_or_path):
        length = _architecture(name_or_path, None, {}).max_text_len
    elif is_pretrained_name(name_or_path):
        length = VLMoConfig.named(pretrained_size(name_or_path)).max_text_len
    elif not is_url(name_or_path):
        folder = Path(local_copy(name_or_path))  # an exported folder carries its tokenizer and length
        if (folder / CONFIG_NAME).is_file():
            length = json.loads((folder / CONFIG_NAME).read_text()).get("max_text_len", length)
        if (folder / TOKENIZER_CONFIG_NAME).is_file():
            name = str(folder)
    return VLMoTokenizer(hf_tokenizer(name), context_length or length)


def export_model(
    vlmo: VLMo,
    folder: Source,
    tokenizer: PreTrainedTokenizerBase,
    answers: Optional[Sequence[str]] = None,
    overwrite: bool = False,
    timm: bool = False,
    run: Optional[RunSource] = None,
) -> Path:
    """Write a folder :func:`create_model_and_transforms` loads to bit-identical outputs.

    ``model.safetensors`` + ``config.json`` (no pickle anywhere), the tokenizer
    (``vocab.txt`` and its settings), ``answer_vocab.json`` when known and a ``README.md``
    model card (:mod:`~vlmo_composer.inference.model_card`; ``run``: the training run the
    weights came from, whose config, data and last evaluation it records): a Hugging Face
    Hub repository as it is. ``timm`` adds the vision tower as a timm BEiT
    (``timm_model.safetensors`` + ``timm_config.json``, see
    :mod:`vlmo_composer.checkpoints.timm_export`).
    """
    folder = Path(folder)
    ours = (WEIGHTS_NAME, CONFIG_NAME, TOKENIZER_CONFIG_NAME, ANSWER_VOCAB_NAME, TIMM_WEIGHTS_NAME, TIMM_CONFIG_NAME,
            README_NAME)
    existing = [name for name in ours if (folder / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{folder} already holds {existing}; pass overwrite=True to replace them")
    if timm:
        timm_beit_kwargs(vlmo.config)  # a model timm cannot express fails before anything is written
    card = model_card(vlmo.config, answers, run_facts(run) if run is not None else None, timm)
    save_safetensors(vlmo, folder)
    if timm:
        save_timm_beit(vlmo, folder)
    else:
        for name in (TIMM_WEIGHTS_NAME, TIMM_CONFIG_NAME):  # a stale backbone would not match the new weights
            (folder / name).unlink(missing_ok=True)
    tokenizer.save_pretrained(str(folder))
    answers_path = folder / ANSWER_VOCAB_NAME
    if answers is not None:
        answers_path.write_text(answer_vocab_to_json(list(answers)) + "\n")
    elif answers_path.exists():
        answers_path.unlink()  # a stale vocabulary would be loaded with the new weights
    (folder / README_NAME).write_text(card)
    return folder


# ---------------------------------------------------------------------- helpers
def _module(loaded: LoadedModel, device: Union[str, torch.device]) -> VLMoCLIP:
    pad_id = hf_tokenizer(loaded.tokenizer).pad_token_id  # the masks encode_text derives
    return VLMoCLIP(loaded.vlmo, pad_id, loaded.answers).to(device).eval()


def _is_training_yaml(name: Any) -> bool:
    return isinstance(name, (str, os.PathLike)) and str(name).endswith((".yaml", ".yml"))


def _is_architecture(name: Any) -> bool:
    if isinstance(name, VLMoConfig):
        return True
    return isinstance(name, str) and name in NAMED_CONFIGS and not os.path.exists(name)


def _architecture(name: Union[str, VLMoConfig], image_size: Optional[int], changes: dict) -> VLMoConfig:
    changes = {**changes, **({"image_size": image_size} if image_size else {})}
    return name.replace(**changes) if isinstance(name, VLMoConfig) else VLMoConfig.named(name, **changes)


def _training_run(yaml_path: str, overrides: Sequence[str]) -> tuple[VLMoConfig, dict, Optional[str]]:
    """A training YAML's model config, its training loader's transform options and tokenizer name."""
    from vlmo_composer.training.builders import resolve_config
    from vlmo_composer.training.config import load_config

    cfg = load_config(yaml_path, list(overrides))
    model = resolve_config(cfg).model
    dataset = cfg.train_loader.dataset
    return model, {k: dataset[k] for k in TRANSFORM_OPTIONS if k in dataset}, dataset.get("tokenizer_name")


def _read_answers(answer_vocab: Optional[PathOrList]) -> Optional[list[str]]:
    if answer_vocab is None:
        return None
    if isinstance(answer_vocab, (str, os.PathLike)):
        try:
            return answer_vocab_from_json(Path(local_copy(answer_vocab)).read_text())
        except ValueError as err:
            raise ValueError(f"{answer_vocab}: {err}") from err
    answers = list(answer_vocab)
    if not all(isinstance(a, str) for a in answers):
        raise TypeError("answer_vocab must be a path or a list of answer strings")
    return answers
