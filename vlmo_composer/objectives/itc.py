"""Image-text contrastive loss over the global batch (open_clip's local-loss formulation)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vlmo_composer.objectives.distributed import gather_with_grad, rank_and_world


@dataclass
class ContrastiveOutput:
    loss: torch.Tensor
    # Local image rows against every gathered text, scaled (used for hard negatives).
    logits_per_image: torch.Tensor
    logits_per_text: torch.Tensor
    # Column of each local row's positive in the gathered batch.
    targets: torch.Tensor


def contrastive_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
) -> ContrastiveOutput:
    """Symmetric InfoNCE of local rows against the gathered global batch.

    Features are gathered *with* gradient and each rank scores only its own rows,
    so after DDP's gradient averaging the update equals that of one process seeing
    the whole global batch. (The official VLMo code gathers without gradient, which
    scales the contrastive gradient by 1/#GPUs; this is the fix.)
    """
    rank, _ = rank_and_world()
    all_images = gather_with_grad(image_features, check_sizes=True)
    all_texts = gather_with_grad(text_features)
    scale = logit_scale.exp()
    logits_per_image = scale * image_features @ all_texts.T
    logits_per_text = scale * text_features @ all_images.T
    batch = image_features.shape[0]
    targets = torch.arange(batch, device=image_features.device) + rank * batch
    loss = (F.cross_entropy(logits_per_image.float(), targets) + F.cross_entropy(logits_per_text.float(), targets)) / 2
    return ContrastiveOutput(loss, logits_per_image, logits_per_text, targets)
