"""Fixed (non-learned) sin/cos encoding of relative neighbour coordinates (Point-NN / Point-PN)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GeometryEncoding(nn.Module):
    """Encode relative xyz ``(..., 3) -> (..., dim)`` with sines and cosines of several frequencies.

    Each axis gets ``dim // 6`` frequencies ``beta * x / alpha^(j / (dim // 6))``, sin and cos
    interleaved; leftover channels (when ``dim`` is not a multiple of 6) are zero. Nothing is
    learned, so it adds no parameters.
    """

    def __init__(self, dim: int, alpha: float = 1000.0, beta: float = 100.0) -> None:
        super().__init__()
        self.dim = dim
        self.beta = beta
        freqs = max(1, dim // 6)
        exponent = torch.arange(freqs, dtype=torch.float32) / freqs
        self.register_buffer("inv_scale", alpha ** (-exponent), persistent=False)

    def forward(self, rel_xyz: Tensor) -> Tensor:
        angles = self.beta * rel_xyz.unsqueeze(-1) * self.inv_scale  # (..., 3, F)
        enc = torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-3)  # (..., 6F)
        if enc.shape[-1] >= self.dim:
            return enc[..., : self.dim]
        pad = enc.new_zeros(*enc.shape[:-1], self.dim - enc.shape[-1])
        return torch.cat((enc, pad), dim=-1)
