"""Reading foreign checkpoint files safely, and checking a state dict against a model."""

from __future__ import annotations

import fnmatch
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Union

import torch

from vlmo_composer import stores
from vlmo_composer.common.errors import ConfigError
from vlmo_composer.checkpoints.pretrained import is_pretrained_name

StateDictSource = Union[str, os.PathLike, Mapping[str, torch.Tensor]]

WRAPPER_KEYS = ("state_dict", "module", "model")


def read_state_dict(source: StateDictSource) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` from a file or a dict.

    Files are read with ``torch.load(weights_only=True)`` (official files are plain
    tensors and must never be unpickled as code). The dict may sit under
    ``state_dict``, ``module`` (DeepSpeed, ``module.`` prefixes stripped) or ``model``.
    """
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise FileNotFoundError(f"checkpoint not found: {path}")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle.UnpicklingError and friends
            raise ValueError(
                f"cannot read {path} as a plain tensor checkpoint (torch.load weights_only=True): {err}\n"
                "A Composer checkpoint (ep*-ba*-rank*.pt) is a pickle of the whole training state and needs "
                "weights_only=False, which can run code: load it that way only if you trust where it came from"
            ) from err
    else:
        obj = source
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
    for key in WRAPPER_KEYS:
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    state = {}
    for name, value in obj.items():
        if not torch.is_tensor(value):
            raise ValueError(f"checkpoint entry '{name}' is a {type(value).__name__}, not a tensor")
        if name.startswith("module."):
            name = name[len("module."):]
        state[name] = value
    return state


def matches_any(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


@dataclass
class LoadReport:
    """What a conversion did: keys adapted (with why) and keys skipped by permission."""

    adapted: list[str] = field(default_factory=list)
    allowed_missing: list[str] = field(default_factory=list)
    allowed_unexpected: list[str] = field(default_factory=list)
    weights: str = ""  # which set of a Composer checkpoint was read (EMA or raw); not part of the match
    batch: Optional[int] = None  # a Composer checkpoint's step: batches trained (its state's timestamp)
    trained_on: Optional[dict] = None  # a Composer checkpoint's data record (callbacks.DataProvenance), if any

    def record(self, path: str, kind: str) -> dict[str, Any]:
        """What an evaluation or a model card says was loaded: the weights' path and kind, and a
        Composer checkpoint's step (batches trained, from its state's timestamp) and the data it
        was trained on (its ``DataProvenance`` record), so a number traces back to its data."""
        return {"path": path, "kind": kind, **({"batch": self.batch} if self.batch is not None else {}),
                **({"trained_on": self.trained_on} if self.trained_on is not None else {})}

    def __str__(self) -> str:
        lines = [f"adapted: {a}" for a in self.adapted]
        if self.allowed_missing:
            lines.append(f"left at initialisation (allowed missing): {self.allowed_missing}")
        if self.allowed_unexpected:
            lines.append(f"ignored (allowed unexpected): {self.allowed_unexpected}")
        return "\n".join(lines) or "exact match"


def check_and_load(
    model: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    allow_missing: Iterable[str] = (),
    allow_unexpected: Iterable[str] = (),
    report: LoadReport | None = None,
    source: str = "checkpoint",
) -> LoadReport:
    """Load ``state`` into ``model``; every key must match unless allowed by a glob.

    Raises ``KeyError`` naming every missing / unexpected key and every shape
    mismatch at once, so a user fixes a conversion in one go.
    """
    report = report or LoadReport()
    allow_missing, allow_unexpected = list(allow_missing), list(allow_unexpected)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad_shapes = [
        f"{k}: {source} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in state
        if k in own and state[k].shape != own[k].shape
    ]
    report.allowed_missing += [k for k in missing if matches_any(k, allow_missing)]
    report.allowed_unexpected += [k for k in unexpected if matches_any(k, allow_unexpected)]
    missing = [k for k in missing if not matches_any(k, allow_missing)]
    unexpected = [k for k in unexpected if not matches_any(k, allow_unexpected)]
    problems = []
    if missing:
        problems.append(f"missing from the {source}: {missing}")
    if unexpected:
        problems.append(f"in the {source} but not in the model: {unexpected}")
    if bad_shapes:
        problems.append(f"shape mismatches: {bad_shapes}")
    if problems:
        raise KeyError(
            "cannot load " + source + ":\n  " + "\n  ".join(problems)
            + "\n(pass allow_missing / allow_unexpected globs for an intended partial load)"
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return report


# ---------------------------------------------------------------- checkpoint files
def check_checkpoint_file(path: str, key: str) -> None:
    """A local checkpoint must exist and look like a complete ``torch.save`` file.

    ``torch.save`` writes a zip archive (a truncated one has no central directory);
    files from before PyTorch 1.6 are a bare pickle, which starts with byte 0x80.
    """
    if stores.has_scheme(path) or is_pretrained_name(path):  # checked when downloaded
        return
    if not os.path.isfile(path):
        raise ConfigError(f"{key}: checkpoint {path} does not exist")
    if zipfile.is_zipfile(path):
        return
    with open(path, "rb") as fh:
        if fh.read(1) == b"\x80":
            return
    raise ConfigError(f"{key}: {path} is not a readable PyTorch checkpoint (truncated, or not written by torch.save)")


CHECKPOINT_READ_ERRORS = ("PytorchStreamReader", "invalid load key", "Ran out of input", "unpickling", "zip archive")


def is_checkpoint_read_error(err: BaseException) -> bool:
    import pickle

    if isinstance(err, (pickle.UnpicklingError, EOFError, zipfile.BadZipFile)):
        return True
    return isinstance(err, (RuntimeError, ValueError)) and any(s in str(err) for s in CHECKPOINT_READ_ERRORS)
