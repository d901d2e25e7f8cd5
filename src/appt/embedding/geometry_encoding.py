"""Fixed (non-learned) sin/cos encoding of relative neighbour coordinates (Point-NN / Point-PN)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

LAYOUTS = ("pairs", "blocks")


class GeometryEncoding(nn.Module):
    """Encode relative xyz ``(..., 3) -> (..., dim)`` with sines and cosines of several frequencies.

    Each axis gets ``F = dim // 6`` frequencies ``beta * x / alpha^(j / F)``. ``layout`` orders the
    ``6F`` channels, axis-major either way: ``pairs`` (appt's default) interleaves sin and cos of
    each frequency, ``blocks`` (the authors' order) gives an axis all its sines, then all its
    cosines. The order matters only for loading weights trained with the other one, since the
    encoding is added channel by channel to learned features. Leftover channels (when ``dim`` is
    not a multiple of 6) are zero. Nothing is learned, so it adds no parameters.
    """

    def __init__(self, dim: int, alpha: float = 1000.0, beta: float = 100.0, layout: str = "pairs") -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"geometry encoding layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        self.dim = dim
        self.beta = beta
        self.layout = layout
        freqs = max(1, dim // 6)
        exponent = torch.arange(freqs, dtype=torch.float32) / freqs
        self.register_buffer("scale", torch.pow(alpha, exponent), persistent=False)

    def forward(self, rel_xyz: Tensor) -> Tensor:
        angles = self.beta * rel_xyz.unsqueeze(-1) / self.scale  # (..., 3, F)
        dim = -1 if self.layout == "pairs" else -2  # (..., 3, F, 2) or (..., 3, 2, F)
        enc = torch.stack((angles.sin(), angles.cos()), dim=dim).flatten(-3)  # (..., 6F)
        if enc.shape[-1] >= self.dim:
            return enc[..., : self.dim]
        pad = enc.new_zeros(*enc.shape[:-1], self.dim - enc.shape[-1])
        return torch.cat((enc, pad), dim=-1)
