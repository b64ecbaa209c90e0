"""Task heads on top of the MoME backbone (official layouts and key names)."""

from __future__ import annotations

import torch
import torch.nn as nn


class Pooler(nn.Module):
    """``tanh(dense(x[:, 0]))`` on the fused sequence's text CLS."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden_states[:, 0]))


class Projection(nn.Module):
    """Bias-free ``D -> D`` projection used by the contrastive heads (key ``fc``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class ITMHead(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, 2)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(pooled)


class MLMTransform(nn.Module):
    """BERT's prediction-head transform: dense, GELU, LayerNorm (eps 1e-12)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.act = nn.GELU()
        self.LayerNorm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(x)))


class MLMHead(nn.Module):
    """Untied MLM decoder with a separate output bias (official ``mlm_score``)."""

    def __init__(self, dim: int, vocab_size: int, eps: float) -> None:
        super().__init__()
        self.transform = MLMTransform(dim, eps)
        self.decoder = nn.Linear(dim, vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def init_own_parameters(self) -> None:
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(x)) + self.bias


def classifier(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """The VQA / NLVR2 head: Linear, LayerNorm, GELU, Linear (keys ``0, 1, 3``)."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, out_dim))
