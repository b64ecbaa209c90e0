"""VLMo: the MoME backbone with its embeddings and heads.

One network, three ways to run it (the reason VLMo exists):

* ``encode_image`` / ``encode_text``: dual encoder (V-FFN or L-FFN in every block),
  for contrastive retrieval;
* ``fuse``: fusion encoder over ``[text; image]`` (modality experts below the VL
  start, VL-FFN from it on), for ITM, MLM, VQA and NLVR2;
* the VL branch: the top blocks re-run with the VL-FFN on unimodal states
  (``vl_states``), the second contrastive pair of stage-3 pre-training.

Each path takes ``draw_keys``, one int64 key per row for this pass
(:func:`vlmo_composer.common.keyed_draws.row_keys`): drop path and text dropout are then
drawn from the key, mixed with the layer, instead of the generator, so a row's masks do
not depend on which rank holds it (a task builds them from the step key and the sample ids).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from vlmo_composer.common.keyed_draws import mix
from vlmo_composer.model.attention import AttentionBias, padded_length
from vlmo_composer.model.checkpointing import checkpointed
from vlmo_composer.model.config import VLMoConfig
from vlmo_composer.model.heads import ITMHead, MLMHead, Pooler, Projection, classifier
from vlmo_composer.model.layers import FUSION, IMAGE, TEXT, VL, MoMEBlock, PatchEmbed, TextEmbeddings
from vlmo_composer.model.relative_position import RelativePositionLayout


@dataclass
class UnimodalOutput:
    """A text-only or image-only pass.

    ``last_hidden_state``: last block's output before the final norm ``[B, N, D]``;
    ``states``: after the final norm; ``vl_states``: the VL branch (top blocks re-run
    with the VL-FFN) after the final norm, or ``None`` when not requested.
    """

    last_hidden_state: torch.Tensor
    states: torch.Tensor
    vl_states: Optional[torch.Tensor] = None


@dataclass
class FusionOutput:
    """A fused ``[text; image]`` pass; ``pooled`` is the pooler on the text CLS."""

    text_states: torch.Tensor
    image_states: torch.Tensor
    pooled: torch.Tensor
    last_hidden_state: torch.Tensor


BLOCK_RECOMPILE_LIMIT = 32


def compile_blocks(blocks: nn.ModuleList) -> None:
    """Regional compilation: each block compiled in place, one graph per (mode, expert
    layout, shape) shared by all blocks of that kind (~11 for stage 3). The limit is
    raised so none falls back to eager."""
    limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
    setattr(torch._dynamo.config, limit, max(getattr(torch._dynamo.config, limit), BLOCK_RECOMPILE_LIMIT))
    for block in blocks:
        block.compile(dynamic=False)
        # Selective checkpointing's path, its regions traced by dynamo (the eager caching
        # mode of torch.utils.checkpoint would leave compiled code inside it to eager).
        block.forward_selective = torch.compile(block.forward_selective, dynamic=False)


class MoMETransformer(nn.Module):
    """Patch embedding, image CLS, blocks and final norm (official ``transformer.*``)."""

    def __init__(self, config: VLMoConfig) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.pos_embed = (
            nn.Parameter(torch.zeros(1, config.num_patches + 1, config.hidden_size))
            if config.absolute_position
            else None
        )
        depth = config.num_layers
        rates = [config.drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linear 0 -> rate
        self.blocks = nn.ModuleList(
            MoMEBlock(config, rates[i], with_vl_ffn=i >= config.vl_ffn_start) for i in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.init_std = config.init_std

    def init_own_parameters(self) -> None:
        nn.init.trunc_normal_(self.cls_token, std=self.init_std)
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=self.init_std)


class VLMo(nn.Module):
    """The VLMo model: backbone + pooler + ITC/ITM/MLM heads (+ VQA/NLVR2 when configured).

    Parameter names equal the official checkpoint keys, so
    :func:`vlmo_composer.checkpoints.load_official` is a checked, near-identity map.
    """

    def __init__(self, config: VLMoConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.hidden_size
        self.transformer = MoMETransformer(config)
        self.text_embeddings = TextEmbeddings(config)
        self.token_type_embeddings = nn.Embedding(config.num_modality_types, dim)
        self.layout = RelativePositionLayout(config.window_size, config.relative_text_len)
        if config.relative_position:
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros(self.layout.num_rows, config.num_heads * config.num_layers)
            )
        else:
            self.relative_position_bias_table = None
        self.pooler = Pooler(dim)
        if config.itc_head:
            self.itc_text_proj = Projection(dim)
            self.itc_image_proj = Projection(dim)
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        if config.itc_vl_head:
            self.itc_vl_text_proj = Projection(dim)
            self.itc_vl_image_proj = Projection(dim)
            self.logit_vl_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        if config.itm_head:
            self.itm_score = ITMHead(dim)
        if config.mlm_head:
            self.mlm_score = MLMHead(dim, config.vocab_size, config.text_norm_eps)
        if config.vqa_num_labels > 0:
            self.vqa_classifier = classifier(dim, 2 * dim, config.vqa_num_labels)
        if config.nlvr2_head:
            self.nlvr2_classifier = classifier(2 * dim, 2 * dim, 2)
        self._index_cache: dict[tuple, torch.Tensor] = {}
        self.apply(self.param_init_fn)
        if config.compile_blocks:
            compile_blocks(self.blocks)
        if config.relative_position:
            # Kept for checkpoint compatibility but never used: a trainable unused
            # parameter would stall DDP's gradient reduction.
            self.text_embeddings.position_embeddings.weight.requires_grad_(False)

    # ------------------------------------------------------------------ init & hooks
    def param_init_fn(self, module: nn.Module) -> None:
        """Initialise the parameters a module owns directly (official scheme).

        Used by ``__init__`` through ``apply`` and by FSDP to materialise a model
        built on the ``meta`` device one wrapped module at a time.
        """
        std = self.config.init_std
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.trunc_normal_(module.weight, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            module.reset_parameters()  # PyTorch's default, as the official patch embedding keeps
        if hasattr(module, "init_own_parameters"):
            module.init_own_parameters()
        if module is self:
            if self.relative_position_bias_table is not None:
                nn.init.zeros_(self.relative_position_bias_table)
            for name in ("logit_scale", "logit_vl_scale"):
                if hasattr(self, name):
                    nn.init.constant_(getattr(self, name), math.log(1 / 0.07))

    def fsdp_wrap_fn(self, module: nn.Module) -> bool:
        """FSDP wraps each MoME block (the unit of compute and of re-use by the VL branch)."""
        return isinstance(module, MoMEBlock)

    def activation_checkpointing_fn(self, module: nn.Module) -> bool:
        return isinstance(module, MoMEBlock)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.transformer.blocks

    # ------------------------------------------------------------------ embeddings
    def _check_text(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> None:
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be [batch, length]; got {tuple(input_ids.shape)}")
        if input_ids.shape[1] > self.config.max_text_len:
            raise ValueError(
                f"text length {input_ids.shape[1]} exceeds the model's max_text_len={self.config.max_text_len}; "
                "truncate when tokenising"
            )
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids {tuple(input_ids.shape)}"
            )

    def embed_text(self, input_ids: torch.Tensor, draw_keys: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.text_embeddings(input_ids, draw_keys) + self.token_type_embeddings.weight[0]

    def embed_image(
        self,
        pixel_values: torch.Tensor,
        image_type_id: int = 1,
        patch_mask: Optional[torch.Tensor] = None,
        mask_token: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """``[cls; patches]`` tokens; ``patch_mask`` ``[B, P]`` swaps patches for ``mask_token`` (MIM)."""
        if not 1 <= image_type_id < self.config.num_modality_types:
            raise ValueError(
                f"image_type_id={image_type_id} needs num_modality_types > {image_type_id} "
                f"(the model has {self.config.num_modality_types})"
            )
        patches = self.transformer.patch_embed(pixel_values)
        if patch_mask is not None:
            weight = patch_mask.unsqueeze(-1).to(patches.dtype)
            patches = patches * (1 - weight) + mask_token.to(patches.dtype) * weight
        cls = self.transformer.cls_token.expand(patches.shape[0], -1, -1)
        x = torch.cat([cls, patches], dim=1)
        if self.transformer.pos_embed is not None:
            x = x + self.transformer.pos_embed
        return x + self.token_type_embeddings.weight[image_type_id]

    # ------------------------------------------------------------------ attention bias
    def _relative_index(self, kind: str, text_len: int, device: torch.device) -> torch.Tensor:
        if torch.compiler.is_compiling():  # traced from shapes; a dict filled in a graph is a guard that fails
            return self._build_relative_index(kind, text_len, device)  # on the next step (a recompile)
        key = (kind, text_len, device)
        if key not in self._index_cache:
            with torch.inference_mode(False):  # a cached inference tensor would break later training
                self._index_cache[key] = self._build_relative_index(kind, text_len, device)
        return self._index_cache[key]

    def _build_relative_index(self, kind: str, text_len: int, device: torch.device) -> torch.Tensor:
        if kind == IMAGE:
            index = self.layout.image_index()
        elif kind == TEXT:
            index = self.layout.text_index(text_len)
        else:
            index = self.layout.fused_index(text_len)
        n = index.shape[1]
        return F.pad(index, (0, padded_length(n) - n)).to(device)  # aligned mask rows (sliced off)

    def _attention_biases(
        self, kind: str, text_len: int, device: torch.device, key_padding: Optional[torch.Tensor]
    ) -> list[AttentionBias]:
        """Per layer: its table columns ``[rows, H]``, the row index, and which keys are real.

        Nothing ``[B, H, N, N]`` is built here: the SDPA path builds one layer's mask
        inside attention (recomputed, not saved, under checkpointing); the flex path never does.
        """
        num_layers, heads = self.config.num_layers, self.config.num_heads
        table = self.relative_position_bias_table
        index = None if table is None else self._relative_index(kind, text_len, device)
        valid = None if key_padding is None else key_padding.bool()
        return [
            AttentionBias(None if table is None else table[:, i * heads : (i + 1) * heads], index, valid)
            for i in range(num_layers)
        ]

    # ------------------------------------------------------------------ block stack
    def _run_block(
        self, index: int, x: torch.Tensor, bias, mode: str, text_len: int = 0,
        draw_keys: Optional[torch.Tensor] = None, run: int = 0,
    ) -> torch.Tensor:
        """Block ``index``; its drop-path keys are ``draw_keys`` mixed with the layer's number
        in this pass (``run`` 1: the VL branch's second use of the top blocks)."""
        block = self.blocks[index]
        keys = None
        if draw_keys is not None and self.training:
            keys = mix(draw_keys, index + run * self.config.num_layers)
        if self.config.activation_checkpointing and self.training and torch.is_grad_enabled():
            if self.config.checkpoint_policy == "selective":
                return block.forward_selective(x, bias, mode, text_len, keys)
            return checkpointed(block, x, bias, mode, text_len, keys)
        return block(x, bias, mode, text_len, keys)

    def _unimodal(
        self, x: torch.Tensor, mode: str, biases: list, with_vl: bool, draw_keys: Optional[torch.Tensor] = None
    ) -> UnimodalOutput:
        vl_start = self.config.vl_ffn_start
        with_vl = with_vl and 0 < vl_start < self.config.num_layers
        branch = None
        for i in range(self.config.num_layers):
            if with_vl and i == vl_start:
                branch = x
            x = self._run_block(i, x, biases[i], mode, draw_keys=draw_keys)
        vl_states = None
        if branch is not None:
            for i in range(vl_start, self.config.num_layers):
                branch = self._run_block(i, branch, biases[i], VL, draw_keys=draw_keys, run=1)
            vl_states = self.transformer.norm(branch)
        return UnimodalOutput(x, self.transformer.norm(x), vl_states)

    # ------------------------------------------------------------------ forward paths
    def forward_image(
        self,
        pixel_values: Optional[torch.Tensor],
        with_vl: bool = False,
        image_type_id: int = 1,
        image_embeds: Optional[torch.Tensor] = None,
        draw_keys: Optional[torch.Tensor] = None,
    ) -> UnimodalOutput:
        """Image-only pass through the V-FFN experts (and the VL branch when asked)."""
        x = self.embed_image(pixel_values, image_type_id) if image_embeds is None else image_embeds
        biases = self._attention_biases(IMAGE, 0, x.device, None)
        return self._unimodal(x, IMAGE, biases, with_vl, draw_keys)

    def forward_text(
        self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None, with_vl: bool = False,
        draw_keys: Optional[torch.Tensor] = None,
    ) -> UnimodalOutput:
        """Text-only pass through the L-FFN experts (and the VL branch when asked)."""
        self._check_text(input_ids, attention_mask)
        x = self.embed_text(input_ids, draw_keys)
        biases = self._attention_biases(TEXT, input_ids.shape[1], x.device, attention_mask)
        return self._unimodal(x, TEXT, biases, with_vl, draw_keys)

    def fuse(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        pixel_values: Optional[torch.Tensor] = None,
        image_type_id: int = 1,
        image_embeds: Optional[torch.Tensor] = None,
        draw_keys: Optional[torch.Tensor] = None,
    ) -> FusionOutput:
        """Fusion encoder over ``[text; image]``; pass ``image_embeds`` to reuse :meth:`embed_image`."""
        self._check_text(input_ids, attention_mask)
        if image_embeds is None:
            if pixel_values is None:
                raise ValueError("fuse needs pixel_values or image_embeds")
            image_embeds = self.embed_image(pixel_values, image_type_id)
        if image_embeds.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"batch sizes differ: {input_ids.shape[0]} texts and {image_embeds.shape[0]} images"
            )
        text_len = input_ids.shape[1]
        x = torch.cat([self.embed_text(input_ids, draw_keys), image_embeds], dim=1)
        padding = None
        if attention_mask is not None:
            image_mask = attention_mask.new_ones(image_embeds.shape[:2])
            padding = torch.cat([attention_mask, image_mask], dim=1)
        biases = self._attention_biases(FUSION, text_len, x.device, padding)
        for i in range(self.config.num_layers):
            x = self._run_block(i, x, biases[i], FUSION, text_len, draw_keys)
        states = self.transformer.norm(x)
        return FusionOutput(states[:, :text_len], states[:, text_len:], self.pooler(states), x)

    # ------------------------------------------------------------------ contrastive embeddings
    def _project(self, cls_state: torch.Tensor, head: str, normalize: bool) -> torch.Tensor:
        if not hasattr(self, head):
            raise AttributeError(f"this model has no '{head}' head (see VLMoConfig itc_head / itc_vl_head)")
        out = getattr(self, head)(cls_state)
        return F.normalize(out, dim=-1) if normalize else out

    def encode_image(
        self, pixel_values: torch.Tensor, normalize: bool = True, draw_keys: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """ITC image embedding ``[B, D]`` (V-FFN path, L2-normalised by default)."""
        states = self.forward_image(pixel_values, draw_keys=draw_keys).states
        return self._project(states[:, 0], "itc_image_proj", normalize)

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None, normalize: bool = True,
        draw_keys: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """ITC text embedding ``[B, D]`` (L-FFN path, L2-normalised by default)."""
        states = self.forward_text(input_ids, attention_mask, draw_keys=draw_keys).states
        return self._project(states[:, 0], "itc_text_proj", normalize)

    def itc_image_features(self, out: UnimodalOutput, normalize: bool = True) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(ITC, VL-branch ITC) embeddings of an image pass from :meth:`forward_image`."""
        vl = None if out.vl_states is None else self._project(out.vl_states[:, 0], "itc_vl_image_proj", normalize)
        return self._project(out.states[:, 0], "itc_image_proj", normalize), vl

    def itc_text_features(self, out: UnimodalOutput, normalize: bool = True) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(ITC, VL-branch ITC) embeddings of a text pass from :meth:`forward_text`."""
        vl = None if out.vl_states is None else self._project(out.vl_states[:, 0], "itc_vl_text_proj", normalize)
        return self._project(out.states[:, 0], "itc_text_proj", normalize), vl

    # ------------------------------------------------------------------ heads
    def itm_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.itm_score(pooled)

    def mlm_logits(self, text_states: torch.Tensor) -> torch.Tensor:
        return self.mlm_score(text_states)

    def vqa_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.vqa_classifier(pooled)

    def nlvr2_logits(self, pooled_pair: torch.Tensor) -> torch.Tensor:
        return self.nlvr2_classifier(pooled_pair)

    def nlvr2_pair_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, left: torch.Tensor, right: torch.Tensor,
        draw_keys: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """NLVR2 (False, True) logits: the sentence fused with each image (the right one with
        modality id 2) as one batch of ``2B``, the two poolers concatenated."""
        images = torch.cat([self.embed_image(left, image_type_id=1), self.embed_image(right, image_type_id=2)])
        keys = None if draw_keys is None else torch.cat([mix(draw_keys, 0), mix(draw_keys, 1)])
        fused = self.fuse(
            torch.cat([input_ids, input_ids]), torch.cat([attention_mask, attention_mask]), image_embeds=images,
            draw_keys=keys,
        )
        return self.nlvr2_logits(torch.cat(fused.pooled.chunk(2), dim=-1))

    def match_scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        """ITM "match" logit of each (text, image) pair, the re-ranking score."""
        return self.itm_logits(self.fuse(input_ids, attention_mask, pixel_values).pooled)[:, 1]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        pixel_values: torch.Tensor,
        image_type_id: int = 1,
    ) -> FusionOutput:
        """``model(...)`` is the fusion encoder, the default use of a unified model."""
        return self.fuse(input_ids, attention_mask, pixel_values, image_type_id)

    # ------------------------------------------------------------------ sizes
    def num_parameters(self, backbone_only: bool = False) -> int:
        """Parameter count; ``backbone_only`` leaves out the pooler and every head."""
        heads = ("pooler.", "itc_", "logit_", "itm_score.", "mlm_score.", "vqa_classifier.", "nlvr2_classifier.")
        return sum(
            p.numel() for n, p in self.named_parameters() if not (backbone_only and n.startswith(heads))
        )
