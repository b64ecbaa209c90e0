"""Building blocks of the MoME Transformer.

Attribute names follow the official implementation (``norm2_imag``, ``mlp_vl``,
``gamma_1``, ...) so that official checkpoints map onto these modules key by key.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from vlmo_composer.common.keyed_draws import element_uniforms, mix, unit_uniforms
from vlmo_composer.model.attention import AttentionBias, attend, resolve_attention
from vlmo_composer.model.checkpointing import checkpointed
from vlmo_composer.model.config import VLMoConfig

# Which expert a block applies to its tokens.
IMAGE, TEXT, VL, FUSION = "image", "text", "vl", "fusion"
MODES = (IMAGE, TEXT, VL, FUSION)


class Mlp(nn.Module):
    """GELU feed-forward expert (``fc1 -> GELU -> fc2``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention shared by all modalities.

    ``qkv`` has no bias; separate ``q_bias`` and ``v_bias`` (the key bias is zero),
    as in BEiT. ``kind`` picks the kernel (see :mod:`vlmo_composer.model.attention`).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, kind: str = "auto") -> None:
        super().__init__()
        self.num_heads = num_heads
        self.kind = kind
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.proj = nn.Linear(dim, dim)

    def init_own_parameters(self) -> None:
        if self.q_bias is not None:
            nn.init.zeros_(self.q_bias)
            nn.init.zeros_(self.v_bias)

    def forward(self, x: torch.Tensor, attn_bias: Optional[AttentionBias]) -> torch.Tensor:
        return self.project_heads(self.attend_heads(self.qkv_states(x), attn_bias))

    # The three steps apart, so selective checkpointing can leave the kernel outside its regions.
    def qkv_states(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, 3 * dim]`` query/key/value projection."""
        bias = None
        if self.q_bias is not None:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        return F.linear(x, self.qkv.weight, bias)

    def attend_heads(self, qkv: torch.Tensor, attn_bias: Optional[AttentionBias]) -> torch.Tensor:
        """``[B, H, N, d]`` attention output; q, k, v are views of ``qkv``."""
        batch, length, _ = qkv.shape
        q, k, v = qkv.reshape(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        return attend(q, k, v, attn_bias, resolve_attention(self.kind, q.device))

    def project_heads(self, heads: torch.Tensor) -> torch.Tensor:
        batch, _, length, _ = heads.shape
        return self.proj(heads.transpose(1, 2).reshape(batch, length, -1))


def _layer_scale(init: Optional[float], dim: int) -> Optional[nn.Parameter]:
    return nn.Parameter(init * torch.ones(dim)) if init is not None else None


class DropPath(nn.Module):
    """Stochastic depth per sample. The keep probability is a buffer, not a Python float, so
    every block shares one compiled graph instead of recompiling per rate.

    With ``keys`` ([B] int64, one per row: :func:`~vlmo_composer.common.keyed_draws.row_keys`
    mixed with the layer), a row is kept when its keyed number (mixed with ``salt``, one per
    residual of the block) is below the keep probability: the draw depends on the row's sample
    id, not on the rank holding it. Without keys, timm's draw from the generator.
    """

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.drop_prob = rate  # timm's name
        self.register_buffer("keep", torch.tensor(1.0 - rate), persistent=False)

    def init_own_parameters(self) -> None:  # the buffer of a model built on "meta"
        self.keep.fill_(1.0 - self.drop_prob)

    def forward(self, x: torch.Tensor, keys: Optional[torch.Tensor] = None, salt: int = 0) -> torch.Tensor:
        if not self.training:
            return x
        keep = self.keep.to(x.dtype)
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        if keys is None:
            draw = x.new_empty(shape).bernoulli_(keep)
        else:
            draw = (unit_uniforms(mix(keys, salt)) < self.keep.float()).to(x.dtype).view(shape)
        return x * (draw / keep)


class MoMEBlock(nn.Module):
    """One Mixture-of-Modality-Experts block.

    Shared ``norm1`` + attention + layer scale, then the expert of the mode:
    V-FFN (``image``), L-FFN (``text``), VL-FFN (``vl``); ``fusion`` routes the text
    slice ``[:text_len]`` to the L-FFN and the rest to the V-FFN below the VL start,
    and everything through the VL-FFN from it on. ``gamma_2`` is shared by all experts.
    """

    def __init__(self, config: VLMoConfig, drop_path: float, with_vl_ffn: bool) -> None:
        super().__init__()
        dim, eps = config.hidden_size, config.norm_eps
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, config.num_heads, config.qkv_bias, config.attention)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2_text = nn.LayerNorm(dim, eps=eps)
        self.mlp_text = Mlp(dim, config.ffn_size)
        self.norm2_imag = nn.LayerNorm(dim, eps=eps)
        self.mlp_imag = Mlp(dim, config.ffn_size)
        self.with_vl_ffn = with_vl_ffn
        if with_vl_ffn:
            self.norm2_vl = nn.LayerNorm(dim, eps=eps)
            self.mlp_vl = Mlp(dim, config.ffn_size)
        self.layer_scale_init = config.layer_scale_init
        self.gamma_1 = _layer_scale(config.layer_scale_init, dim)
        self.gamma_2 = _layer_scale(config.layer_scale_init, dim)

    def init_own_parameters(self) -> None:
        if self.gamma_1 is not None:
            nn.init.constant_(self.gamma_1, self.layer_scale_init)
            nn.init.constant_(self.gamma_2, self.layer_scale_init)

    def _residual(
        self, x: torch.Tensor, update: torch.Tensor, gamma: Optional[torch.Tensor], keys: Optional[torch.Tensor], salt: int
    ) -> torch.Tensor:
        update = update if gamma is None else gamma * update
        if isinstance(self.drop_path, DropPath):
            update = self.drop_path(update, keys, salt)
        return x + update

    def forward(
        self, x: torch.Tensor, attn_bias: Optional[AttentionBias], mode: str, text_len: int = 0,
        keys: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """``keys``: this layer's [B] draw keys (keyed drop path), or None (the generator)."""
        heads = self.attn.attend_heads(self.attention_input(x), attn_bias)
        return self.after_attention(x, heads, mode, text_len, keys)

    def forward_selective(
        self, x: torch.Tensor, attn_bias: Optional[AttentionBias], mode: str, text_len: int = 0,
        keys: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Selective activation checkpointing in two regions around the attention kernel.

        The kernel runs outside both regions: it saves only q/k/v (views of the kept
        qkv output), its output and log-sum-exp, and FlexAttention's higher-order op
        cannot run under the checkpoint's caching mode. Each region keeps its matmul
        outputs and recomputes its pointwise work (LayerNorm, GELU, layer scale, drop
        path, residuals, casts) in backward.
        """
        qkv = checkpointed(self.attention_input, x, policy="selective")
        heads = self.attn.attend_heads(qkv, attn_bias)
        return checkpointed(self.after_attention, x, heads, mode, text_len, keys, policy="selective")

    def attention_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn.qkv_states(self.norm1(x))

    def after_attention(
        self, x: torch.Tensor, heads: torch.Tensor, mode: str, text_len: int = 0, keys: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Output projection, residual and the expert of ``mode`` (see the class docstring).
        Each residual draws its own drop path (salts 0-3), as separate timm calls would."""
        x = self._residual(x, self.attn.project_heads(heads), self.gamma_1, keys, 0)
        if mode == FUSION:
            if self.with_vl_ffn:
                mode = VL
            else:
                text, image = x[:, :text_len], x[:, text_len:]
                text = self._residual(text, self.mlp_text(self.norm2_text(text)), self.gamma_2, keys, 2)
                image = self._residual(image, self.mlp_imag(self.norm2_imag(image)), self.gamma_2, keys, 3)
                return torch.cat([text, image], dim=1)
        if mode == IMAGE:
            update = self.mlp_imag(self.norm2_imag(x))
        elif mode == TEXT:
            update = self.mlp_text(self.norm2_text(x))
        elif mode == VL:
            if not self.with_vl_ffn:
                raise ValueError("this block has no VL-FFN (it lies below vl_ffn_start)")
            update = self.mlp_vl(self.norm2_vl(x))
        else:
            raise ValueError(f"unknown block mode '{mode}'; choose one of {MODES}")
        return self._residual(x, update, self.gamma_2, keys, 1)


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` convolution to tokens."""

    def __init__(self, config: VLMoConfig) -> None:
        super().__init__()
        self.image_size = config.image_size
        self.proj = nn.Conv2d(
            config.in_chans, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.proj.in_channels:
            raise ValueError(
                f"pixel_values must be [batch, {self.proj.in_channels}, H, W]; got {tuple(pixel_values.shape)}"
            )
        height, width = pixel_values.shape[-2:]
        if (height, width) != (self.image_size, self.image_size):
            raise ValueError(
                f"image size {height}x{width} does not match the model's {self.image_size}x{self.image_size}; "
                "resize the images or load the model with image_size="
                f"{height} (the relative table is interpolated)"
            )
        return self.proj(pixel_values).flatten(2).transpose(1, 2)


TEXT_DROPOUT_SALT = -1  # the text dropout's keys, apart from every layer's (mixed with 0, 1, ...)


class TextEmbeddings(nn.Module):
    """BERT-style text embeddings (word + token type [+ absolute position], LayerNorm, dropout).

    Under relative positions the position table exists (official checkpoints carry
    it) but is not added, exactly like BERT with ``position_embedding_type='rel_pos'``.
    """

    def __init__(self, config: VLMoConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, dim, padding_idx=0)
        self.position_embeddings = nn.Embedding(config.max_text_len, dim)
        self.token_type_embeddings = nn.Embedding(2, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=config.text_norm_eps)
        self.dropout = nn.Dropout(config.effective_text_embed_dropout)
        self.absolute_position = config.absolute_position
        self.vocab_size = config.vocab_size

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Stages differ in text length (196 for the text stage, 40 after). Under relative
        # positions the position table is unused, so a checkpoint's table of another
        # length is cut or padded (with this model's values) instead of failing the load.
        key = prefix + "position_embeddings.weight"
        if key in state_dict and not self.absolute_position:
            state_dict[key] = fit_rows(state_dict[key], self.position_embeddings.weight.detach())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, input_ids: torch.Tensor, keys: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``keys`` ([B] draw keys of the rows): the dropout mask of element (position, channel) is
        keyed by the row's key, so it does not depend on the rank; None: the generator's mask."""
        x = self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0]
        if self.absolute_position:
            x = x + self.position_embeddings.weight[: input_ids.shape[1]]
        x = self.LayerNorm(x)
        rate = self.dropout.p
        if keys is None or not self.training or rate == 0:
            return self.dropout(x)
        kept = element_uniforms(mix(keys, TEXT_DROPOUT_SALT), tuple(x.shape[1:])) >= rate
        return x * kept.to(x.dtype) / (1.0 - rate)


def fit_rows(loaded: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """``loaded`` cut to ``current``'s row count, or padded with ``current``'s extra rows."""
    rows = current.shape[0]
    if loaded.shape[0] >= rows:
        return loaded[:rows]
    return torch.cat([loaded, current[loaded.shape[0]:].to(loaded.device, loaded.dtype)])
