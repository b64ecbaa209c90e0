from __future__ import annotations

from collections import Counter

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from data_helpers import image_bytes
from vlmo_composer.data.images import decode_image
from vlmo_composer.data.randaugment import FILL, OFFICIAL_OPS, RandAugment, apply_op
from vlmo_composer.data.transforms import build_image_transform, sample_crop_box


def _image(width=48, height=40, seed=0) -> Image.Image:
    return decode_image(image_bytes(width, height, seed=seed, fmt="PNG"))


def test_train_transform_shape_range_and_determinism():
    transform = build_image_transform(32, train=True)
    img = _image()
    out = transform(img, np.random.default_rng([1, 2, 3]))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1 and out.std() > 0.05
    assert torch.equal(out, transform(img, np.random.default_rng([1, 2, 3])))
    others = [transform(img, np.random.default_rng([1, 2, k])) for k in range(4, 10)]
    assert all(not torch.equal(out, o) for o in others)


def test_eval_transform_equals_the_official_square_transform():
    img = _image(50, 30)
    official = T.Compose(
        [
            T.Resize((24, 24), interpolation=T.InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize([0.5] * 3, [0.5] * 3),
        ]
    )
    ours = build_image_transform(24, train=False)
    assert torch.equal(ours(img), official(img))
    assert torch.equal(ours(img, np.random.default_rng(0)), ours(img, np.random.default_rng(1)))


def test_hflip_switch():
    # Left half black, right half white: a flipped output has a brighter left edge.
    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[:, 16:] = 255
    img = Image.fromarray(pixels)

    def flipped_fraction(hflip: bool) -> float:
        transform = build_image_transform(16, train=True, randaugment=False, hflip=hflip)
        outs = [transform(img, np.random.default_rng(seed)) for seed in range(200)]
        return float(np.mean([o[:, :, 0].mean() > o[:, :, -1].mean() for o in outs]))

    assert flipped_fraction(False) == 0.0
    assert 0.4 < flipped_fraction(True) < 0.6


def test_crop_box_follows_random_resized_crop_bounds():
    rng = np.random.default_rng(0)
    for width, height in [(64, 48), (500, 375), (40, 70)]:
        for _ in range(500):
            top, left, h, w = sample_crop_box(width, height, (0.5, 1.0), (3 / 4, 4 / 3), rng)
            assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
            assert 0.5 * width * height * 0.95 <= h * w <= width * height
            assert 3 / 4 * 0.95 <= w / h <= 4 / 3 * 1.05
    # No random box fits a very tall image: the centred fallback with the closest ratio.
    assert sample_crop_box(30, 200, (0.5, 1.0), (3 / 4, 4 / 3), rng) == (80, 0, 40, 30)


def test_randaugment_samples_like_the_official_random_augment():
    aug = RandAugment()
    chosen = [aug.sample_ops(np.random.default_rng(seed)) for seed in range(4000)]
    applied = [op for ops in chosen for op in ops]
    # Two draws with replacement, each applied with probability 0.5: one op per image on average.
    assert abs(len(applied) / 4000 - 1.0) < 0.05
    counts = Counter(name for name, _ in applied)
    assert set(counts) == set(OFFICIAL_OPS)
    assert all(abs(c / len(applied) - 0.1) < 0.02 for c in counts.values())
    magnitudes = {name: {round(abs(arg), 6) for n, arg in applied if n == name} for name in OFFICIAL_OPS}
    assert magnitudes["brightness"] == magnitudes["sharpness"] == {1.36}  # 7/10 * 1.8 + 0.1, never below 1
    assert magnitudes["shear_x"] == magnitudes["shear_y"] == {0.21}
    assert magnitudes["translate_x"] == magnitudes["translate_y"] == {7.0}  # absolute pixels
    assert magnitudes["rotate"] == {21.0}
    signs = [arg > 0 for name, arg in applied if name == "rotate"]
    assert 0.4 < np.mean(signs) < 0.6


def test_randaugment_operations():
    img = _image(40, 40, seed=3)
    src = np.asarray(img).astype(int)
    assert np.array_equal(np.asarray(apply_op(img, "identity", 0.0)), src)

    # Positive translate_x moves the content left by 7 px and fills with grey (official sign).
    moved = np.asarray(apply_op(img, "translate_x", 7.0)).astype(int)
    assert np.array_equal(moved[:, :-7], src[:, 7:])
    assert (moved[:, -7:] == FILL[0]).all()
    moved_y = np.asarray(apply_op(img, "translate_y", -7.0)).astype(int)
    assert np.array_equal(moved_y[7:], src[:-7]) and (moved_y[:7] == FILL[0]).all()

    flat = Image.new("RGB", (8, 8), (100, 50, 10))
    # x * 1.36, truncated like the official lookup table (13.6 -> 13)
    assert np.asarray(apply_op(flat, "brightness", 1.36))[0, 0].tolist() == [136, 68, 13]

    rotated = np.asarray(apply_op(img, "rotate", 21.0))
    assert (rotated[0, 0] == FILL).all() and not np.array_equal(rotated, src)  # corners uncovered
    for name in ("autocontrast", "equalize", "sharpness", "shear_x", "shear_y"):
        assert apply_op(img, name, 0.21 if "shear" in name else 1.36).size == img.size
    equalized = np.asarray(apply_op(img, "equalize", 0.0))
    assert equalized.max() == 255  # histogram stretched over the full range


def test_randaugment_is_a_function_of_the_generator():
    aug = RandAugment()
    img = _image(32, 32, seed=5)
    a = np.asarray(aug(img, np.random.default_rng(11)))
    b = np.asarray(aug(img, np.random.default_rng(11)))
    assert np.array_equal(a, b)
