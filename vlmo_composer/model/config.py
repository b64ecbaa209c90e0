"""Typed model configuration and the named VLMo sizes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional


@dataclass
class VLMoConfig:
    """Everything that decides the shape and behaviour of a :class:`~vlmo_composer.VLMo`.

    Field names follow the paper; ``official_*`` comments give the official config key.
    """

    name: str = "custom"
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    ffn_size: int = 3072
    vl_ffn_start: int = 10  # blocks with index >= this own a VL-FFN (official: vlffn_start_layer_index)
    patch_size: int = 16
    image_size: int = 224
    in_chans: int = 3
    max_text_len: int = 40
    # Text length the relative table's 1-D text rows were laid out for. The official
    # code fixes it to the text-only stage's length (official: max_text_len_of_initckpt).
    relative_text_len: int = 196
    vocab_size: int = 30522
    num_modality_types: int = 2  # 0 text, 1 image (+ 2 second image for NLVR2)
    relative_position: bool = True  # shared relative-position table (base, large)
    absolute_position: bool = False  # learned absolute positions (base_plus)
    layer_scale_init: Optional[float] = 0.1  # None disables layer scale (base_plus)
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    text_norm_eps: float = 1e-12  # BERT embedding LayerNorm
    drop_path_rate: float = 0.1
    # Dropout after the BERT text embeddings. The official code passes drop_path_rate
    # as BERT's hidden_dropout_prob, so None means "same as drop_path_rate".
    text_embed_dropout: Optional[float] = None
    init_std: float = 0.02
    # Heads.
    itc_head: bool = True  # itc_{text,image}_proj + logit_scale
    itc_vl_head: bool = True  # itc_vl_{text,image}_proj + logit_vl_scale (VL-branch ITC)
    itm_head: bool = True
    mlm_head: bool = True
    vqa_num_labels: int = 0  # > 0 adds the VQA classifier
    nlvr2_head: bool = False  # adds the NLVR2 classifier (and needs num_modality_types=3)
    # Memory: recompute each block in backward (per-block activation checkpointing).
    activation_checkpointing: bool = False
    # What a checkpointed block keeps: "full" (only its input) or "selective" (matmul and
    # attention outputs kept, pointwise work recomputed: most of the saving, little recompute).
    checkpoint_policy: str = "full"
    # Attention kernel: "auto" (FlexAttention on CUDA, SDPA elsewhere), "sdpa" or "flex".
    attention: str = "auto"
    # Regional compilation: torch.compile each MoME block (the whole step compiles through
    # Composer's compile_config instead; use one or the other).
    compile_blocks: bool = False

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}"
            )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size={self.image_size} is not a multiple of patch_size={self.patch_size}"
            )
        if not 0 <= self.vl_ffn_start <= self.num_layers:
            raise ValueError(f"vl_ffn_start={self.vl_ffn_start} must lie in [0, num_layers={self.num_layers}]")
        if self.relative_position and self.max_text_len > self.relative_text_len:
            raise ValueError(
                f"max_text_len={self.max_text_len} exceeds relative_text_len={self.relative_text_len}: "
                "the relative table has no rows for such offsets"
            )
        if self.checkpoint_policy not in ("full", "selective"):
            raise ValueError(f"checkpoint_policy '{self.checkpoint_policy}' is not one of ('full', 'selective')")
        if self.attention not in ("auto", "sdpa", "flex"):
            raise ValueError(f"attention '{self.attention}' is not one of ('auto', 'sdpa', 'flex')")
        if self.nlvr2_head and self.num_modality_types < 3:
            raise ValueError("nlvr2_head needs num_modality_types=3 (a modality id for the second image)")

    # Derived sizes ----------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def window_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.window_size**2

    @property
    def num_vl_layers(self) -> int:
        return self.num_layers - self.vl_ffn_start

    @property
    def effective_text_embed_dropout(self) -> float:
        return self.drop_path_rate if self.text_embed_dropout is None else self.text_embed_dropout

    # Construction ------------------------------------------------------------------
    @classmethod
    def named(cls, name: str, **overrides: Any) -> "VLMoConfig":
        """A named size (``tiny``, ``small``, ``base``, ``large``, ``base_plus``) with overrides."""
        if name not in NAMED_CONFIGS:
            raise KeyError(f"unknown VLMo size '{name}'; choose one of {sorted(NAMED_CONFIGS)}")
        return cls.from_dict({**NAMED_CONFIGS[name], "name": name, **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "VLMoConfig":
        """Build from a plain dict, rejecting unknown keys with the valid choices."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise KeyError(f"unknown VLMoConfig keys {unknown}; valid keys are {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "VLMoConfig":
        return dataclasses.replace(self, **changes)


NAMED_CONFIGS: dict[str, dict[str, Any]] = {
    # Exactly the official reference fixture's configuration (tests/fixtures/official_vlmo_tiny.pt).
    "tiny": dict(
        hidden_size=64, num_layers=2, num_heads=2, ffn_size=256, vl_ffn_start=1,
        patch_size=16, image_size=32, max_text_len=8, relative_text_len=196, vocab_size=100,
    ),
    # The quick-start model: learns the synthetic data on a CPU in minutes.
    "small": dict(
        hidden_size=128, num_layers=4, num_heads=4, ffn_size=512, vl_ffn_start=3,
        patch_size=16, image_size=64, max_text_len=24, relative_text_len=196,
    ),
    "base": dict(
        hidden_size=768, num_layers=12, num_heads=12, ffn_size=3072, vl_ffn_start=10,
    ),
    "large": dict(
        hidden_size=1024, num_layers=24, num_heads=16, ffn_size=4096, vl_ffn_start=21,
    ),
    "base_plus": dict(
        hidden_size=544, num_layers=24, num_heads=16, ffn_size=2176, vl_ffn_start=21,
        relative_position=False, absolute_position=True, layer_scale_init=None,
    ),
}
