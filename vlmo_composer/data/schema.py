"""The MDS shard schemas: the one contract between ``data_prep/`` and training.

Every converter writes exactly these columns (MDS encodings) and every
streaming dataset reads exactly these. Change a schema here and nowhere else;
``data_prep/README.md`` documents the same table for users.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class Schema:
    """A named set of MDS columns (name -> Streaming encoding)."""

    name: str
    columns: Mapping[str, str]
    doc: str = ""

    def validate(self, sample: Mapping[str, Any]) -> None:
        """Raise ``KeyError`` naming missing or unexpected keys of a sample."""
        missing = sorted(set(self.columns) - set(sample))
        extra = sorted(set(sample) - set(self.columns))
        if missing or extra:
            raise KeyError(
                f"sample does not match schema '{self.name}': "
                f"missing {missing}, unexpected {extra}; expected {sorted(self.columns)}"
            )


IMAGE_TEXT = Schema(
    "image_text",
    {
        "image": "bytes",  # encoded image file bytes (JPEG/PNG/...), decoded at read time
        "captions": "json",  # list[str], every caption of this image
        "image_id": "str",
        "source": "str",  # e.g. "coco", "cc3m", "sbu", "vg", "web", "synthetic"
        "width": "int",
        "height": "int",
    },
    "One row per image with all of its captions (COCO, F30K, CC, SBU, VG, web pairs).",
)

VQA = Schema(
    "vqa",
    {
        "image": "bytes",
        "question": "str",
        "question_id": "int",
        "image_id": "str",
        "answers": "json",  # list[str]: the raw annotator answers (empty for test)
        "labels": "json",  # list[int]: answer-vocabulary ids with a non-zero score
        "scores": "json",  # list[float]: soft score of each label (0.3/0.6/0.9/1.0)
    },
    "One row per question.",
)

NLVR2 = Schema(
    "nlvr2",
    {
        "image_0": "bytes",
        "image_1": "bytes",
        "sentence": "str",
        "label": "int",  # 1 for "True", 0 for "False"
        "identifier": "str",
    },
    "One row per (sentence, image pair).",
)

TEXT = Schema("text", {"text": "str"}, "One document or paragraph per row.")

IMAGE = Schema("image", {"image": "bytes"}, "Image-only rows without labels.")

IMAGE_LABELED = Schema(
    "image_labeled",
    {"image": "bytes", "label": "int"},
    "Image-only rows with a class label (ImageNet-style folders).",
)

SCHEMAS: dict[str, Schema] = {
    s.name: s for s in (IMAGE_TEXT, VQA, NLVR2, TEXT, IMAGE, IMAGE_LABELED)
}


def get_schema(name: str) -> Schema:
    try:
        return SCHEMAS[name]
    except KeyError:
        raise KeyError(f"unknown schema '{name}'; choose one of {sorted(SCHEMAS)}") from None
