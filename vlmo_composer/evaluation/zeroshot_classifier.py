"""Zero-shot image classification with the dual encoder (the CLIP recipe, as open_clip builds it).

Each class name fills every prompt template ("a photo of a {}."); the texts are
encoded, their normalised embeddings averaged over the templates and normalised
again: one column per class. An image's logits are its cosine to every column.
ImageNet-1k's class names and OpenAI's 80 templates ship in ``vlmo_composer/assets``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, Union

import torch

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SHIPPED_CLASS_NAMES = {"imagenet1k": ASSETS / "imagenet1k_classnames.txt"}
SHIPPED_TEMPLATES = {"openai": ASSETS / "openai_imagenet_templates.txt"}
NameList = Union[str, os.PathLike, Sequence[str]]


@dataclass
class ZeroShotClassifier:
    weights: torch.Tensor  # [D, C] normalised class embeddings
    class_names: list[str]


def read_lines(path: Union[str, os.PathLike]) -> list[str]:
    """Non-empty lines of a text file; lines starting with ``#`` are comments."""
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _names(value: NameList, shipped: dict[str, Path], what: str) -> list[str]:
    if isinstance(value, (str, os.PathLike)):
        key = os.fspath(value)
        if key in shipped:
            return read_lines(shipped[key])
        if not os.path.exists(key):
            raise FileNotFoundError(f"{what}: {key} is neither a shipped list {sorted(shipped)} nor a file")
        if key.endswith(".json"):  # convert_images.py's classes.json
            data = json.loads(Path(key).read_text())
            if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
                raise ValueError(f"{key}: expected {{\"classes\": [...]}} (as convert_images.py writes)")
            return data["classes"]
        return read_lines(key)
    names = list(value)
    bad = [i for i, n in enumerate(names) if not isinstance(n, str) or not n.strip()]
    if not names or bad:
        raise ValueError(f"{what} must be non-empty strings; got {len(names)} entries, bad ones at {bad[:10]}")
    return names


def load_class_names(value: NameList) -> list[str]:
    """``imagenet1k``, a ``classes.json`` / text file (one name per line, in label order) or a list."""
    return _names(value, SHIPPED_CLASS_NAMES, "class names")


def load_templates(value: NameList) -> list[str]:
    """``openai`` (the 80 ImageNet templates), a text file or a list; each holds one ``{}``."""
    templates = _names(value, SHIPPED_TEMPLATES, "templates")
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise ValueError(f"every template needs exactly one '{{}}' for the class name; not: {bad[:5]}")
    return templates


def build_zero_shot_classifier(
    encode_texts: Callable[[list[str]], torch.Tensor],
    class_names: Sequence[str],
    templates: Sequence[str],
    classes_per_batch: int = 10,
) -> ZeroShotClassifier:
    """``[D, C]`` class embeddings; ``encode_texts`` returns normalised ``[N, D]`` text embeddings.

    ``classes_per_batch`` classes x every template are encoded per call (memory bound).
    """
    if classes_per_batch < 1:
        raise ValueError(f"classes_per_batch must be >= 1, got {classes_per_batch}")
    columns = []
    for start in range(0, len(class_names), classes_per_batch):
        batch = class_names[start:start + classes_per_batch]
        texts = [template.format(name) for name in batch for template in templates]
        mean = encode_texts(texts).float().view(len(batch), len(templates), -1).mean(dim=1)
        columns.append(torch.nn.functional.normalize(mean, dim=-1))
    return ZeroShotClassifier(torch.cat(columns).T.contiguous(), list(class_names))


def zero_shot_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Top-1, top-5 accuracy and mean per-class recall (the mean over classes present of their top-1 recall)."""
    if logits.ndim != 2 or labels.shape != (len(logits),):
        raise ValueError(f"expected logits [N, C] and labels [N], got {tuple(logits.shape)} and {tuple(labels.shape)}")
    num_classes = logits.shape[1]
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}); got {labels.min()}..{labels.max()}: "
                         "the class list does not match the dataset")
    top = logits.topk(min(5, num_classes), dim=1).indices
    hit1 = top[:, 0] == labels
    hit5 = (top == labels[:, None]).any(dim=1)
    present = labels.unique()
    per_class = torch.stack([hit1[labels == c].double().mean() for c in present])
    return {"top1": hit1.double().mean().item(), "top5": hit5.double().mean().item(),
            "mean_per_class_recall": per_class.mean().item(), "num_images": len(labels),
            "num_classes": num_classes, "chance_top1": 1.0 / num_classes}
