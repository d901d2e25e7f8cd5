"""Task heads placed after the trunk's normed tokens."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from appt.embedding.layers import LinearBNReLU


class ClassificationHead(nn.Module):
    """Pooled feature ``(B, F) -> logits (B, classes)``: hidden layers with BN/ReLU/dropout, then linear."""

    def __init__(self, in_dim: int, num_classes: int, hidden: tuple[int, ...] = (512, 256), dropout: float = 0.5) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [LinearBNReLU(in_dim, width), nn.Dropout(dropout)]
            in_dim = width
        layers.append(nn.Linear(in_dim, num_classes))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)


def mean_max_pool(tokens: Tensor) -> Tensor:
    """Order-free readout of a token set ``(B, T, D) -> (B, 2D)``: ``[mean, max]`` over tokens."""
    return torch.cat((tokens.mean(dim=1), tokens.amax(dim=1)), dim=-1)
