"""The shared relative-position table of VLMo: row layout, index matrices, resizing.

One table ``[num_rows, heads * layers]`` (columns layer-major) serves image-only,
text-only and fused sequences. Its rows, in the official order, for an image
window ``w x w`` and text layout length ``L0``:

=====================================  ==================================
rows                                   meaning
=====================================  ==================================
``0 .. (2w-1)^2 - 1``                  patch -> patch 2-D offsets (BEiT)
``n_img - 3, n_img - 2, n_img - 1``    image cls->patch, patch->cls, cls->cls
``n_img``, ``n_img + 1``               every text->image, every image->text pair
``n_img + L0 + (j - i)``               text token i -> text token j (i, j >= 1)
``last - 2, last - 1, last``           text cls->token, token->cls, cls->cls
=====================================  ==================================

with ``n_img = (2w-1)^2 + 3``; e.g. 1126 rows at 224 px / patch 16 / L0 = 196.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class RelativePositionLayout:
    window: int  # image patches per side
    text_len: int  # L0: the text length the 1-D rows were laid out for

    @property
    def num_image_rows(self) -> int:
        return (2 * self.window - 1) ** 2 + 3

    @property
    def num_grid_rows(self) -> int:
        return (2 * self.window - 1) ** 2

    @property
    def text_to_image_row(self) -> int:
        return self.num_image_rows

    @property
    def image_to_text_row(self) -> int:
        return self.num_image_rows + 1

    @property
    def num_rows(self) -> int:
        return self.num_image_rows + 2 * self.text_len + 2

    def image_index(self) -> torch.Tensor:
        return _image_index(self.window)

    def text_index(self, length: int) -> torch.Tensor:
        return _text_index(self.window, self.text_len, length)

    def fused_index(self, text_length: int) -> torch.Tensor:
        return _fused_index(self.window, self.text_len, text_length)


def _plain_tensors(fn):
    """Cache index tensors built outside ``inference_mode``: an inference tensor cached by a
    first call under ``inference_mode`` would break every later training pass."""

    @lru_cache(maxsize=None)
    def cached(*args):
        with torch.inference_mode(False):
            return fn(*args)

    cached.__doc__ = fn.__doc__
    return cached


@_plain_tensors
def _image_index(window: int) -> torch.Tensor:
    """``[1 + w*w, 1 + w*w]`` index for ``[cls; patches]`` (BEiT's scheme)."""
    n_grid = (2 * window - 1) ** 2
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # query minus key
    rel = rel + (window - 1)
    grid_index = rel[..., 0] * (2 * window - 1) + rel[..., 1]
    index = torch.zeros((window * window + 1,) * 2, dtype=torch.long)
    index[1:, 1:] = grid_index
    index[0, :] = n_grid  # cls -> patch
    index[:, 0] = n_grid + 1  # patch -> cls
    index[0, 0] = n_grid + 2  # cls -> cls
    return index


@_plain_tensors
def _text_index(window: int, text_len: int, length: int) -> torch.Tensor:
    """``[T, T]`` index for text tokens ``[CLS, t1, ...]``."""
    if length > text_len:
        raise ValueError(f"text length {length} exceeds the relative table's text layout ({text_len})")
    layout = RelativePositionLayout(window, text_len)
    last = layout.num_rows - 1
    pos = torch.arange(length - 1)
    index = torch.empty((length, length), dtype=torch.long)
    index[1:, 1:] = layout.num_image_rows + text_len + (pos[None, :] - pos[:, None])
    index[0, :] = last - 2  # cls -> token
    index[:, 0] = last - 1  # token -> cls
    index[0, 0] = last  # cls -> cls
    return index


@_plain_tensors
def _fused_index(window: int, text_len: int, text_length: int) -> torch.Tensor:
    """``[T + 1 + w*w]`` square index for the fused ``[text; image]`` sequence."""
    layout = RelativePositionLayout(window, text_len)
    n_image = window * window + 1
    text = _text_index(window, text_len, text_length)
    image = _image_index(window)
    top = torch.cat([text, text.new_full((text_length, n_image), layout.text_to_image_row)], dim=1)
    bottom = torch.cat([image.new_full((n_image, text_length), layout.image_to_text_row), image], dim=1)
    return torch.cat([top, bottom], dim=0)


def gather_relative_bias(table: torch.Tensor, index: torch.Tensor, num_layers: int) -> torch.Tensor:
    """Look up every layer's bias at once: ``[num_layers, heads, N, N]``."""
    n = index.shape[0]
    bias = table[index.reshape(-1)].reshape(n, n, num_layers, -1)
    return bias.permute(2, 3, 0, 1)


def resize_relative_table(table: torch.Tensor, src_window: int, dst_window: int) -> torch.Tensor:
    """Resize the image grid rows of a table to another window; every other row is kept exactly.

    The 2-D offset grid ``(2w-1) x (2w-1)`` of each column is resized bicubically
    (``align_corners=False``), as timm does for BEiT. At the same window this is the
    identity. (The official VLMo code uses scipy's removed ``interp2d`` on a
    geometric grid instead; both only initialise a fine-tuning run.)
    """
    if src_window == dst_window:
        return table
    src_grid = (2 * src_window - 1) ** 2
    dst_side = 2 * dst_window - 1
    grid = table[:src_grid].T.reshape(1, -1, 2 * src_window - 1, 2 * src_window - 1)
    resized = F.interpolate(grid.float(), size=(dst_side, dst_side), mode="bicubic", align_corners=False)
    resized = resized.reshape(-1, dst_side * dst_side).T.to(table.dtype)
    return torch.cat([resized, table[src_grid:]], dim=0)


def window_from_table_rows(num_rows: int, text_len: int) -> int:
    """Recover the image window of a table from its row count (raises if none fits)."""
    grid_rows = num_rows - 3 - 2 * text_len - 2
    side = round(grid_rows**0.5)
    if side * side != grid_rows or side % 2 == 0:
        raise ValueError(
            f"a relative table of {num_rows} rows does not fit the layout "
            f"(2w-1)^2 + 3 + 2*{text_len} + 2 for any window w"
        )
    return (side + 1) // 2
