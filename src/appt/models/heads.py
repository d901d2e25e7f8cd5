"""Task heads placed after the trunk's normed tokens."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from appt.embedding.layers import LinearBNReLU


READOUT_POOLS = ("concat", "sum")
READOUT_NORMS = ("copied", "fresh")


class ClassificationHead(nn.Module):
    """Pooled feature ``(B, F) -> logits (B, classes)``: hidden layers with BN/ReLU/dropout, then linear.

    ``bias``: the hidden layers' biases, cancelled by their BatchNorm (for the authors' checkpoints).
    """

    def __init__(self, in_dim: int, num_classes: int, hidden: tuple[int, ...] = (512, 256), dropout: float = 0.5,
                 bias: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [LinearBNReLU(in_dim, width, bias=bias), nn.Dropout(dropout)]
            in_dim = width
        layers.append(nn.Linear(in_dim, num_classes))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)


def mean_max_pool(tokens: Tensor, mode: str = "concat") -> Tensor:
    """Order-free readout of a token set: mean and max over tokens, per sample.

    ``concat``: ``(B, T, D) -> (B, 2D)`` ``[mean, max]`` (the head sees both apart);
    ``sum``: ``(B, T, D) -> (B, D)`` ``mean + max`` (the authors'; a head half as wide).
    """
    if mode == "sum":
        return tokens.mean(dim=1) + tokens.amax(dim=1)
    if mode == "concat":
        return torch.cat((tokens.mean(dim=1), tokens.amax(dim=1)), dim=-1)
    raise ValueError(f"readout pooling must be one of {', '.join(READOUT_POOLS)}, got {mode!r}")
