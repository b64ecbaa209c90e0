"""Image transforms of the official VLMo code, driven by an explicit random generator.

Train (``square_transform_randaug``): RandomResizedCrop(S, scale 0.5-1, ratio
3/4-4/3, bicubic), horizontal flip (p=0.5), RandAugment(2, 7), to tensor,
normalise with mean = std = 0.5. Eval (``square_transform``): resize to
``S x S`` bicubic (aspect not kept), to tensor, normalise.

Every random choice (crop box, flip, RandAugment operations) is drawn from the
``numpy.random.Generator`` given to ``__call__``; the datasets seed it from
(seed, epoch, sample index), which makes augmentation independent of worker
processes and visit order, so a resumed run sees exactly the same pixels.

``hflip``: the official code flips regardless of "left"/"right" in captions
and questions (kept as the default); turn it off for data where the words
matter (the synthetic quick-start data).
"""

from __future__ import annotations

import math

import numpy as np
import torchvision.transforms.functional as TF
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode

from vlmo_composer.data.randaugment import RandAugment

MEAN = STD = (0.5, 0.5, 0.5)
CROP_RATIO = (3 / 4, 4 / 3)


def sample_crop_box(
    width: int,
    height: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: np.random.Generator,
) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box ``(top, left, height, width)``: torchvision's algorithm, our generator.

    Up to ten tries of an area fraction uniform in ``scale`` and a log-uniform
    aspect ratio; if none fits, the largest centred box with a ratio in range.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def to_normalized_tensor(img: Image.Image) -> Tensor:
    """``[3, H, W]`` float32 in [-1, 1] (mean = std = 0.5)."""
    return TF.normalize(TF.to_tensor(img), MEAN, STD)


class ImageTransform:
    """PIL image (+ generator) -> normalised ``[3, S, S]`` float32 tensor.

    ``draft_size`` is the smallest JPEG draft size that never makes this
    transform upsample (see ``vlmo_composer.data.images``).
    """

    def __init__(
        self,
        image_size: int,
        train: bool,
        randaugment: bool = True,
        hflip: bool = True,
        scale: tuple[float, float] = (0.5, 1.0),
        ratio: tuple[float, float] = CROP_RATIO,
    ) -> None:
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"crop scale must satisfy 0 < min <= max <= 1, got {scale}")
        self.image_size = image_size
        self.train = train
        self.hflip = hflip
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.randaugment = RandAugment() if (train and randaugment) else None
        if train:
            shortest_crop_side = math.sqrt(self.scale[0] * min(self.ratio[0], 1 / self.ratio[1]))
            self.draft_size = math.ceil(image_size / shortest_crop_side)
        else:
            self.draft_size = image_size

    def __call__(self, img: Image.Image, rng: np.random.Generator | None = None) -> Tensor:
        size = [self.image_size, self.image_size]
        if not self.train:
            return to_normalized_tensor(TF.resize(img, size, InterpolationMode.BICUBIC))
        rng = rng if rng is not None else np.random.default_rng()
        top, left, h, w = sample_crop_box(img.width, img.height, self.scale, self.ratio, rng)
        img = TF.resized_crop(img, top, left, h, w, size, InterpolationMode.BICUBIC)
        flip = rng.random() < 0.5  # drawn even when disabled, so hflip does not shift later draws
        if self.hflip and flip:
            img = TF.hflip(img)
        if self.randaugment is not None:
            img = self.randaugment(img, rng)
        return to_normalized_tensor(img)

    def __repr__(self) -> str:
        mode = "train" if self.train else "eval"
        return (
            f"ImageTransform({mode}, size={self.image_size}, hflip={self.hflip}, "
            f"randaugment={self.randaugment is not None}, scale={self.scale}, draft_size={self.draft_size})"
        )


def build_image_transform(
    image_size: int,
    train: bool,
    randaugment: bool = True,
    scale: tuple[float, float] = (0.5, 1.0),
    hflip: bool = True,
) -> ImageTransform:
    """The official train (``train=True``) or eval transform at ``image_size``."""
    return ImageTransform(image_size, train, randaugment=randaugment, hflip=hflip, scale=scale)
