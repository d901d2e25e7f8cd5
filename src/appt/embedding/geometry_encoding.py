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
        lead, freqs = rel_xyz.shape[:-1], angles.shape[-1]
        if 6 * freqs > self.dim:  # fewer than 6 channels: one frequency, cut short
            return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-3)[..., : self.dim]
        # sines and cosines written straight into their channels (a stack, then a padding
        # concatenation, would copy these (B, G, k, dim) tensors twice more)
        out = angles.new_empty(*lead, self.dim)
        out[..., 6 * freqs:].zero_()
        slots = out[..., : 6 * freqs].unflatten(-1, (3, freqs, 2) if self.layout == "pairs" else (3, 2, freqs))
        sin, cos = (slots[..., 0], slots[..., 1]) if self.layout == "pairs" else (slots[..., 0, :], slots[..., 1, :])
        sin.copy_(angles.sin())
        cos.copy_(angles.cos())
        return out
