"""Where weights come from: one vocabulary of source kinds, local or ``s3://``, without Composer.

Training's ``init_from``, ``eval.py --weights`` and ``VLMoInference.from_pretrained``
all resolve a source here, under the same kind names:

==============  ==============================================================
``official``    a microsoft/unilm VLMo file (``.pt``/``.pth``/``.ckpt``), read with
                ``torch.load(weights_only=True)``: never unpickled as code
``beit``        a BEiT file (timm or official layout): the vision side only
``safetensors`` a folder with ``model.safetensors`` + ``config.json`` (written by
                ``VLMoInference.export`` or ``save_safetensors``)
``composer``    one of our Composer checkpoints (``latest-rank0.pt``): a pickle, so
                it is unpickled only when this kind is named
==============  ==============================================================

A run trained with Composer's EMA keeps two sets of weights in its checkpoint: by
default the EMA (averaged) ones are read, ``weights="raw"`` picks the training ones
(:func:`select_composer_weights`), and one line says which set was loaded.

``exported`` is the deprecated name of ``safetensors`` (accepted with a
``FutureWarning``). ``s3://``, ``gs://`` and ``azure://`` sources are downloaded by
:mod:`vlmo_composer.stores` (the variables Streaming and Composer read); a folder is every object under
its prefix, and a missing ``X`` with an ``X.symlink`` (Composer's remote ``latest``
pointer) is the object that pointer names. A pretrained name
(``vlmo-base-patch16-coco-retrieval``, an ``official`` file whose size the registry
knows) and an ``https://`` file are downloaded once into the cache of
:mod:`vlmo_composer.checkpoints.pretrained`; a local path of the same name wins.
``hf-hub:org/name`` is an exported folder on the Hugging Face Hub (:mod:`~.hub`).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import torch

from vlmo_composer import stores
from vlmo_composer.checkpoints import hub, pretrained
from vlmo_composer.checkpoints.beit import load_beit
from vlmo_composer.checkpoints.io import LoadReport, check_and_load, read_state_dict
from vlmo_composer.checkpoints.official import adapt_official_state_dict, check_same_size, config_from_official
from vlmo_composer.checkpoints.safetensors_io import CONFIG_NAME, WEIGHTS_NAME, load_safetensors
from vlmo_composer.model import VLMo, VLMoConfig
from vlmo_composer.model.relative_position import window_from_table_rows

WEIGHT_KINDS = ("official", "beit", "safetensors", "composer")
# Which weights of a Composer checkpoint of a run with EMA: the moving average or the trained ones.
WEIGHT_SETS = ("ema", "raw")
EMA_ALGORITHM = "EMA"  # the name Composer serialises the EMA algorithm's state under
# Wrapper segments a parameter name may carry under FSDP / activation checkpointing.
WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")
DEPRECATED_KINDS = {"exported": "safetensors"}
POSITIONS_KEY = "text_embeddings.position_embeddings.weight"


def add_weight_source_options(parser: argparse.ArgumentParser, size_help: str) -> None:
    """``--kind``, ``--size`` and ``--weights-set``: how every command that reads a weights source names it."""
    parser.add_argument("--kind", default="auto", help="official | safetensors | composer (default: guessed)")
    parser.add_argument("--size", help=size_help)
    parser.add_argument("--weights-set", choices=WEIGHT_SETS, help="a Composer checkpoint's ema or raw weights")


def weight_kind(kind: str, where: str = "kind") -> str:
    """``kind`` checked against :data:`WEIGHT_KINDS` (a deprecated name warns and maps to its new one)."""
    if kind in DEPRECATED_KINDS:
        new = DEPRECATED_KINDS[kind]
        warnings.warn(f"{where} '{kind}' is deprecated: use '{new}' (same folder format)", FutureWarning, stacklevel=2)
        return new
    if kind not in WEIGHT_KINDS:
        raise ValueError(f"{where} '{kind}' is not one of {WEIGHT_KINDS}")
    return kind


def guess_kind(local_path: str) -> str:
    """``auto`` for a local (fetched) path: a folder is ``safetensors``, a file ``official`` (read safely;
    ``composer`` must be named)."""
    return "safetensors" if os.path.isdir(local_path) else "official"


# ---------------------------------------------------------------------- fetching
def local_copy(path: Union[str, os.PathLike]) -> str:
    """``path`` itself when local; an object-store file or folder (``s3://``, ``gs://``, ``azure://``:
    :func:`vlmo_composer.stores.fetch`) is downloaded to a temp dir first, a
    pretrained name or an ``https://`` file into the cache (once)."""
    path = os.fspath(path)
    if stores.is_remote(path):
        return stores.fetch(path)
    if pretrained.is_url(path):
        return str(pretrained.download_url(path))
    if hub.is_hub_name(path):  # hf-hub:org/name: an exported folder, through huggingface_hub's cache
        return hub.hub_snapshot(path)
    if stores.has_scheme(path):
        raise ValueError(f"{path}: weights are read from local paths, pretrained names, hf-hub:ORG/NAME, "
                         f"https://, {stores.supported_stores()} only")
    if os.path.exists(path):
        return path
    if pretrained.find_pretrained(path) is not None:
        return str(pretrained.download_pretrained(path))
    raise pretrained.missing_source_error(path)


def check_pretrained_kind(path: Union[str, os.PathLike], kind: str) -> None:
    """A pretrained name is read as the kind of its file (all official ones are ``official``)."""
    if kind != "auto" and pretrained.is_pretrained_name(path):
        entry = pretrained.find_pretrained(path)
        if kind != entry.kind:
            raise ValueError(f"{os.fspath(path)} is a pretrained {entry.kind} checkpoint: use kind "
                             f"'{entry.kind}', not '{kind}'")


def fetch_source(path: Union[str, os.PathLike], kind: str = "auto") -> tuple[str, str]:
    """``(local path, kind)``: fetched once, and an ``auto`` kind guessed from what arrived."""
    kind = kind if kind == "auto" else weight_kind(kind)
    check_pretrained_kind(path, kind)
    local = local_copy(path)
    return local, guess_kind(local) if kind == "auto" else kind


# ---------------------------------------------------------------------- reading
def weight_set(weights: Optional[str], where: str = "weights") -> Optional[str]:
    """``weights`` checked against :data:`WEIGHT_SETS` (None: the default, EMA when the run had it)."""
    if weights is not None and weights not in WEIGHT_SETS:
        raise ValueError(f"{where} '{weights}' is not one of {WEIGHT_SETS}")
    return weights


def check_weight_set(kind: str, weights: Optional[str], where: str = "weights") -> None:
    """Only Composer checkpoints hold two sets: naming one for another kind is a mistake, not a no-op."""
    if weight_set(weights, where) is not None and kind not in ("composer", "auto"):
        raise ValueError(f"{where} '{weights}' chooses between the EMA and raw weights of a Composer "
                         f"checkpoint; the {kind} source has one set (use kind 'composer' or drop {where})")


def ema_state(state: dict) -> Optional[dict]:
    """The EMA algorithm's serialised state in a checkpoint's ``state`` (None: the run had no EMA).

    Composer stores algorithms as ``[(name, state_dict), ...]``.
    """
    algorithms = state.get("algorithms") or []
    pairs = algorithms.items() if isinstance(algorithms, dict) else algorithms
    for entry in pairs:
        if isinstance(entry, (tuple, list)) and len(entry) == 2 and entry[0] == EMA_ALGORITHM:
            if isinstance(entry[1], dict) and isinstance(entry[1].get("ema_model"), dict):
                return entry[1]
    return None


def _unwrapped(name: str) -> str:
    """A parameter name as ``state/model`` spells it (FSDP's summoned names may keep wrapper segments)."""
    for segment in WRAPPER_SEGMENTS:
        name = name.replace(segment, "")
    return name


def _other_set(model: dict, ema: dict, path: str) -> dict[str, torch.Tensor]:
    """``state/model`` with the set the EMA algorithm holds in place of the active one.

    The algorithm keeps only trainable parameters and buffers; the rest (frozen
    parameters) are the same in both sets and come from ``state/model``.
    """
    stored = {**ema["ema_model"].get("named_parameters_dict", {}), **ema["ema_model"].get("named_buffers_dict", {})}
    other = dict(model)
    for name, tensor in stored.items():
        key = _unwrapped(name)
        if key not in model:
            raise ValueError(f"{path}: the EMA state holds '{name}', which state/model lacks: cannot tell "
                             "which weights it belongs to")
        other[key] = tensor
    return other


def select_composer_weights(
    state: dict, path: str, weights: Optional[str] = None
) -> tuple[dict[str, torch.Tensor], str]:
    """``(state/model-keyed weights, one line saying which)`` of a Composer checkpoint's ``state``.

    Composer's EMA swaps its average into the model for checkpointing, so
    ``state/model`` holds whichever set was active and the algorithm's state the
    other one (``ema_weights_active`` says which). ``weights``: ``None`` (default)
    takes EMA when the run had it started, else the only set; ``"ema"`` insists on
    it; ``"raw"`` takes the training weights.
    """
    weights = weight_set(weights)
    model = state.get("model")
    if not isinstance(model, dict):
        raise ValueError(f"{path} is not a Composer checkpoint (no state/model)")
    ema = ema_state(state)
    if ema is None or not ema.get("ema_started", False):
        why = "the run had no EMA" if ema is None else "its EMA had not started"
        if weights == "ema":
            raise ValueError(f"{path}: weights 'ema' asked for, but {why}; use weights 'raw' (or leave it unset)")
        return model, f"weights: raw ({why})" if weights is None else "weights: raw training weights"
    ema_active = bool(ema.get("ema_weights_active", False))
    if (weights or "ema") == "ema":
        return (model if ema_active else _other_set(model, ema, path)), \
            "weights: EMA (the run's exponential moving average; weights 'raw' for the training ones)"
    return (_other_set(model, ema, path) if ema_active else model), "weights: raw training weights (not the EMA)"


def read_composer_weights(
    path: str, weights: Optional[str] = None, announce: bool = True
) -> tuple[dict[str, torch.Tensor], str, Optional[int], Optional[dict]]:
    """``(VLMo weights, which set, step, data record)`` of one of our Composer checkpoints (``state/model/model.*``).

    Composer checkpoints are pickles, so this runs only on a path the user named as
    ``composer``. ``weights`` picks the EMA or raw set (:func:`select_composer_weights`),
    and the choice is printed (unless the caller reports it: ``announce=False``): the two
    can differ a lot. The step is the batches trained, from the state's timestamp; the data
    record is what :class:`~vlmo_composer.callbacks.provenance.DataProvenance` saved (None before it).
    """
    weight_set(weights)  # a bad choice fails before the (large) file is read
    if not os.path.exists(path):
        raise FileNotFoundError(f"Composer checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated file, not a pickle, ...
        raise ValueError(f"cannot read {path} as a Composer checkpoint: {err}") from err
    inner = state.get("state") if isinstance(state, dict) else None
    if not isinstance(inner, dict):
        raise ValueError(f"{path} is not a Composer checkpoint (no state/model)")
    model, line = select_composer_weights(inner, path, weights)
    if announce:
        print(f"{line}, from {path}", file=sys.stderr)
    stamp = inner.get("timestamp") or {}  # Composer writes {"Timestamp": Timestamp.state_dict()}
    batch = stamp.get("Timestamp", stamp).get("batch")
    trained_on = (inner.get("callbacks") or {}).get("DataProvenance")
    return {k[len("model."):]: v for k, v in model.items() if k.startswith("model.")}, line, batch, trained_on


def composer_model_weights(path: str, weights: Optional[str] = None) -> dict[str, torch.Tensor]:
    """The VLMo weights of one of our Composer checkpoints (EMA by default: :func:`read_composer_weights`)."""
    return read_composer_weights(path, weights)[0]


def read_weights(
    kind: str, path: str, weights: Optional[str] = None, report: Optional[LoadReport] = None
) -> dict[str, torch.Tensor]:
    """The state dict of an ``official``, ``safetensors`` or ``composer`` source (already local).

    ``weights`` (``ema``/``raw``) applies to ``composer`` checkpoints only; their set, step and
    data record go into ``report`` when one is given.
    """
    check_weight_set(kind, weights)
    if kind == "safetensors":
        from safetensors.torch import load_file

        file = Path(path) / WEIGHTS_NAME
        if not file.exists():
            raise FileNotFoundError(f"{file} not found (a safetensors source is a folder written by export)")
        return load_file(str(file))
    if kind == "composer":
        if report is None:
            return composer_model_weights(path, weights)
        state, report.weights, report.batch, report.trained_on = read_composer_weights(path, weights)
        return state
    if kind == "official":
        try:
            return read_state_dict(path)
        except ValueError as err:
            raise ValueError(
                f"{err}\nIf {path} is a Composer checkpoint you trust, pass kind='composer' (eval.py: --kind composer); "
                "it is then unpickled, which can run code"
            ) from err
    raise ValueError(f"kind '{kind}' has no plain state dict (BEiT loads into a model: use load_weights_into)")


def load_weights_into(
    model: VLMo,
    kind: str,
    path: str,
    allow_missing: Iterable[str] = (),
    allow_unexpected: Iterable[str] = (),
    weights: Optional[str] = None,
    announce: bool = True,
) -> LoadReport:
    """Load a source into ``model`` after the official adaptations (resolution, text length, modality row).

    Every key must match unless a glob allows it; a 224 px stage-3 checkpoint can so
    start a 384 px fine-tune, or NLVR2 with its third modality row. ``weights``:
    a Composer checkpoint's EMA or raw set (default EMA when the run had it), said on
    stderr unless ``announce=False`` (the caller reports ``LoadReport.weights``).
    """
    kind = weight_kind(kind)
    check_weight_set(kind, weights)
    check_pretrained_kind(path, kind)
    local = local_copy(path)
    if kind == "beit":
        return load_beit(local, model)
    report = LoadReport()
    if kind == "composer":
        source, report.weights, report.batch, report.trained_on = read_composer_weights(local, weights, announce)
    else:
        source = read_weights(kind, local, weights)
    check_same_size(source, model.config, str(path))
    state = adapt_official_state_dict(source, model.config, report)
    return check_and_load(model, state, allow_missing, allow_unexpected, report, source=str(path))


# ---------------------------------------------------------------------- building a model
def build_model(
    path: str,
    kind: str = "auto",
    size: Union[str, VLMoConfig, None] = None,
    image_size: Optional[int] = None,
    weights: Optional[str] = None,
    report: Optional[LoadReport] = None,
    **overrides: Any,
) -> VLMo:
    """A :class:`VLMo` from a source, strictly loaded.

    ``safetensors`` folders carry their config (``size`` must not be given; other
    fields may be changed, e.g. ``image_size``). Files record no shape: ``size``
    names it, heads follow the keys, and the resolution (and for ``composer`` the
    text length) is read from the weights unless given. ``weights``: a Composer
    checkpoint's EMA or raw set (default EMA when the run had it). ``report`` (optional)
    receives what was adapted and a Composer checkpoint's step and data record.
    """
    path = os.fspath(path)
    report = report if report is not None else LoadReport()
    check_weight_set(kind, weights)
    size = size if size is not None else pretrained.pretrained_size(path)  # a name knows its architecture
    local, kind = fetch_source(path, kind)
    check_weight_set(kind, weights)  # an ``auto`` kind is known now
    if kind == "beit":
        raise ValueError(f"{path}: a BEiT file holds only a vision encoder; start a training run from it "
                         "(init_from: {kind: beit}) instead")
    if kind == "safetensors":
        if size is not None:
            raise ValueError(f"{path} is a safetensors folder: its {CONFIG_NAME} sets the model, do not pass size")
        model = load_safetensors(local)
        changes = {**overrides, **({"image_size": image_size} if image_size else {})}
        if not changes:
            return model
        state, model = model.state_dict(), VLMo(model.config.replace(**changes))
    else:
        state = read_weights(kind, local, weights, report)
        if size is None:
            raise ValueError(
                f"{path}: a {kind} checkpoint does not record the model's shape; pass size= (a named size or a "
                "VLMoConfig) and the training's model overrides, or use from_training_config"
            )
        model = VLMo(_file_config(state, size, image_size, overrides, kind))
    check_and_load(model, adapt_official_state_dict(state, model.config, report), report=report, source=path)
    return model


def _file_config(
    state: dict[str, torch.Tensor], size: Union[str, VLMoConfig], image_size: Optional[int], overrides: dict, kind: str
) -> VLMoConfig:
    """A named size with heads from the keys; resolution (and Composer text length) from the weights.

    Reading the resolution from the weights keeps a 480 px VQA checkpoint at 480
    unless the user asks otherwise; our checkpoints store exactly ``max_text_len``
    text positions, official ones may store more.
    """
    if isinstance(size, VLMoConfig):  # taken as given
        return size.replace(**overrides, **({"image_size": image_size} if image_size else {}))
    config = config_from_official(state, size).replace(**overrides)
    inferred: dict[str, Any] = {}
    trained = _trained_image_size(state, config)
    if trained is not None and "image_size" not in overrides:
        inferred["image_size"] = trained
    if kind == "composer" and POSITIONS_KEY in state and "max_text_len" not in overrides:
        inferred["max_text_len"] = state[POSITIONS_KEY].shape[0]
    if image_size is not None:
        inferred["image_size"] = image_size
    return config.replace(**inferred)


def _trained_image_size(state: dict[str, torch.Tensor], config: VLMoConfig) -> Optional[int]:
    table = state.get("relative_position_bias_table")
    if config.relative_position and table is not None:
        return window_from_table_rows(table.shape[0], config.relative_text_len) * config.patch_size
    positions = state.get("transformer.pos_embed")
    if config.absolute_position and positions is not None:
        return math.isqrt(positions.shape[1] - 1) * config.patch_size
    return None
