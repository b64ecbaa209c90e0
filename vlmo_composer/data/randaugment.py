"""RandAugment as the official VLMo code configures it, with an explicit random generator.

The official ``square_transform_randaug`` uses ALBEF's ``RandomAugment(2, 7)``
restricted to ten operations. Its semantics, reproduced here:

* ``num_ops`` operations are drawn uniformly WITH replacement from the list;
  each is then applied with probability 0.5 (so 0, 1 or 2 are applied);
* magnitude ``M`` out of ``MAX_LEVEL = 10`` maps to a fixed strength:
  brightness / sharpness factor ``M/10 * 1.8 + 0.1`` (1.36 at M=7, always
  above 1: no random sign), shear ``M/10 * 0.3`` (0.21), translation
  ``M/10 * 10`` ABSOLUTE pixels (7 px at any resolution), rotation
  ``M/10 * 30`` degrees (21); shear, translation and rotation get a random
  sign; uncovered pixels are filled with grey (128, 128, 128);
* shear is about the top-left corner, rotation about the centre, bilinear.

The operations are PIL's (``ImageOps`` / ``ImageEnhance`` / affine
``Image.transform``), which the ALBEF OpenCV functions were written to match.
One deliberate difference: ALBEF's sharpness casts to uint8 without clipping
(values above 255 wrap around); PIL clips, as the operation intends.

All randomness comes from the ``numpy.random.Generator`` passed in, so the
result is a pure function of the image and the generator's seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

MAX_LEVEL = 10
FILL = (128, 128, 128)
TRANSLATE_CONST = 10  # pixels at MAX_LEVEL

OFFICIAL_OPS: tuple[str, ...] = (
    "identity",
    "autocontrast",
    "equalize",
    "brightness",
    "sharpness",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "rotate",
)


def _affine(img: Image.Image, coeffs: tuple[float, ...]) -> Image.Image:
    """``coeffs`` map an output pixel to the input pixel it samples (PIL's convention)."""
    return img.transform(img.size, Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR, fillcolor=FILL)


class _Op(NamedTuple):
    apply: Callable[[Image.Image, float], Image.Image]
    strength: Callable[[float], float]  # magnitude level -> argument
    signed: bool  # the argument's sign is drawn at random


def _no_arg(level: float) -> float:
    return 0.0


def _enhance_factor(level: float) -> float:
    return level / MAX_LEVEL * 1.8 + 0.1


def _shear(level: float) -> float:
    return level / MAX_LEVEL * 0.3


def _translate(level: float) -> float:
    return level / MAX_LEVEL * TRANSLATE_CONST


def _degrees(level: float) -> float:
    return level / MAX_LEVEL * 30


# Official forward maps: x' = x + s*y (shear_x), x' = x - t (translate_x); PIL wants the inverse.
_OPS: dict[str, _Op] = {
    "identity": _Op(lambda img, _: img, _no_arg, False),
    "autocontrast": _Op(lambda img, _: ImageOps.autocontrast(img), _no_arg, False),
    "equalize": _Op(lambda img, _: ImageOps.equalize(img), _no_arg, False),
    "brightness": _Op(lambda img, f: ImageEnhance.Brightness(img).enhance(f), _enhance_factor, False),
    "sharpness": _Op(lambda img, f: ImageEnhance.Sharpness(img).enhance(f), _enhance_factor, False),
    "shear_x": _Op(lambda img, s: _affine(img, (1, -s, 0, 0, 1, 0)), _shear, True),
    "shear_y": _Op(lambda img, s: _affine(img, (1, 0, 0, -s, 1, 0)), _shear, True),
    "translate_x": _Op(lambda img, t: _affine(img, (1, 0, t, 0, 1, 0)), _translate, True),
    "translate_y": _Op(lambda img, t: _affine(img, (1, 0, 0, 0, 1, t)), _translate, True),
    "rotate": _Op(
        lambda img, deg: img.rotate(deg, resample=Image.Resampling.BILINEAR, fillcolor=FILL), _degrees, True
    ),
}


def apply_op(img: Image.Image, name: str, arg: float) -> Image.Image:
    """Apply one named operation with its (already signed) argument."""
    return _OPS[name].apply(img, arg)


@dataclass(frozen=True)
class RandAugment:
    """``RandAugment(num_ops=2, magnitude=7)`` over the official operation list."""

    num_ops: int = 2
    magnitude: float = 7
    ops: tuple[str, ...] = OFFICIAL_OPS
    prob: float = 0.5

    def __post_init__(self) -> None:
        unknown = sorted(set(self.ops) - set(_OPS))
        if unknown:
            raise ValueError(f"unknown RandAugment operations {unknown}; choose from {sorted(_OPS)}")

    def sample_ops(self, rng: np.random.Generator) -> list[tuple[str, float]]:
        """The operations to apply, in order, with their signed arguments."""
        chosen = []
        for op_index in rng.integers(0, len(self.ops), size=self.num_ops):
            if rng.random() >= self.prob:
                continue
            name = self.ops[op_index]
            op = _OPS[name]
            arg = op.strength(self.magnitude)
            if op.signed and rng.random() < 0.5:
                arg = -arg
            chosen.append((name, arg))
        return chosen

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        for name, arg in self.sample_ops(rng):
            img = apply_op(img, name, arg)
        return img
