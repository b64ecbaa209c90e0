from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from data_helpers import image_bytes
from vlmo_composer.data.images import CorruptSampleError, decode_image
from vlmo_composer.data.transforms import build_image_transform, sample_crop_box


def test_decodes_jpeg_and_png_to_rgb():
    jpeg = decode_image(image_bytes(40, 30, fmt="JPEG"))
    png = decode_image(image_bytes(40, 30, fmt="PNG"))
    assert jpeg.mode == png.mode == "RGB" and jpeg.size == png.size == (40, 30)

    buf = io.BytesIO()
    Image.new("L", (8, 6), 77).save(buf, "PNG")
    gray = decode_image(buf.getvalue())
    assert gray.mode == "RGB" and gray.getpixel((0, 0)) == (77, 77, 77)


def test_jpeg_draft_keeps_both_sides_at_least_the_draft_size():
    big_jpeg = image_bytes(1600, 1200, fmt="JPEG")
    assert decode_image(big_jpeg).size == (1600, 1200)
    assert decode_image(big_jpeg, draft_size=366).size == (800, 600)  # 1200 // 366 = 3 -> scale 1/2
    assert decode_image(big_jpeg, draft_size=224).size == (400, 300)  # 1200 // 224 = 5 -> scale 1/4
    assert decode_image(big_jpeg, draft_size=1300).size == (1600, 1200)  # never below the request
    assert decode_image(image_bytes(1600, 1200, fmt="PNG"), draft_size=224).size == (1600, 1200)


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"", "empty bytes"),
        (b"definitely not an image", "UnidentifiedImageError"),
        (image_bytes(64, 64)[:300], "OSError"),  # truncated JPEG: header fine, data missing
    ],
)
def test_undecodable_bytes_raise_a_clear_value_error(data, fragment):
    with pytest.raises(CorruptSampleError, match="cannot decode image") as info:
        decode_image(data)
    assert isinstance(info.value, ValueError)
    assert fragment in str(info.value)


def test_draft_size_rule_means_crops_are_never_upsampled():
    train = build_image_transform(224, train=True)
    assert train.draft_size == 366  # ceil(224 / sqrt(0.5 * 0.75))
    assert build_image_transform(224, train=False).draft_size == 224
    assert build_image_transform(384, train=True).draft_size == 628

    rng = np.random.default_rng(0)
    # Images as small as a draft may return (shorter side == draft_size), any aspect ratio.
    for width, height in [(366, 366), (366, 900), (1200, 366), (400, 370)]:
        for _ in range(2000):
            _, _, h, w = sample_crop_box(width, height, train.scale, train.ratio, rng)
            assert min(h, w) >= 224, (width, height, h, w)
