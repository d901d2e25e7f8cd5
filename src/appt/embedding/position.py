"""Location for tokens that have no natural order.

A point cloud has no token order for a fixed position embedding to index, so the position
feature is computed from the token set itself: ``X`` and its offset from the set mean
``X - mean(X)`` (both permutation-equivariant) are mixed by a 1x1 convolution (2 -> 1 channel,
2 weights) and added to ``X``. The paper's mixing convolution also has a bias, but a scalar
added to every channel of every token is removed exactly by the LayerNorm that always follows
(backbone input norm, pre-LN blocks, or the readout norm): it never receives a gradient, so we
leave it out unless asked (``bias=True``, for the authors' checkpoints). An optional learnable table stands in for the backbone's own
position embeddings; since FPS orders tokens by geometry (from an order-free start), the table
indexes geometric ranks, not input order.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class PositionMixing(nn.Module):
    """``(B, G, D) -> (B, G, D)``: ``X + w0 X + w1 (X - mean_G X)`` (``+ b`` with ``bias``)."""

    def __init__(self, bias: bool = False) -> None:
        super().__init__()
        self.mix = nn.Conv2d(2, 1, kernel_size=1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        relative = x - x.mean(dim=1, keepdim=True)
        stacked = torch.stack((x, relative), dim=1)  # (B, 2, G, D)
        return x + self.mix(stacked).squeeze(1)


TABLE_INITS = ("trunc_normal", "zeros")


class PositionTable(nn.Module):
    """A learnable ``(1, T, D)`` table added to a token sequence of length ``T``.

    ``init``: ``trunc_normal`` (std 0.02, as ViTs initialise theirs: every token starts with a
    distinct offset) or ``zeros`` (the authors': the table starts as a no-op).
    """

    def __init__(self, num_tokens: int, dim: int, init: str = "trunc_normal") -> None:
        super().__init__()
        if init not in TABLE_INITS:
            raise ValueError(f"position table init must be one of {', '.join(TABLE_INITS)}, got {init!r}")
        self.table = nn.Parameter(torch.zeros(1, num_tokens, dim))
        if init == "trunc_normal":
            nn.init.trunc_normal_(self.table, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.table
