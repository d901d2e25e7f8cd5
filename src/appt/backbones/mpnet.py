"""MPNet encoder layers (all-mpnet-base-v2) as APPT blocks, with MPNet's relative position bias.

MPNet is a post-LN BERT-type encoder whose self-attention adds, per head, a learnt bias to the
attention logit of query ``i`` and key ``j`` looked up by the bucketed signed distance ``j - i``
(T5-style buckets: 16 per direction, exact up to 7, then logarithmic up to 128 and beyond).
Hugging Face's ``MPNetEncoder`` computes it once from the positions ``0 .. T-1`` and hands the same
``(B, H, T, T)`` tensor to every layer. An APPT block only sees ``(B, T, D)``, so here each block
asks one shared :class:`RelativePositionBias` for the bias of the ``T`` it is given (prompts are
inserted between blocks, so ``T`` grows). The bucket indices are cached per ``(T, device)``; the
bias itself is looked up on every call, so a fully fine-tuned backbone trains it.

The bias table belongs to the backbone (``backbone.relative_bias``), not to any block: each block
keeps a plain, unregistered reference, so the table is one named parameter, not twelve aliases.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

NUM_BUCKETS = 32  # what MPNetEncoder uses (its compute_position_bias default), 16 per direction
MAX_DISTANCE = 128


def relative_position_buckets(length: int, device: torch.device | str | None = None) -> Tensor:
    """``(T, T)`` bucket index of key ``j`` seen from query ``i``, as MPNet computes it."""
    pos = torch.arange(length, dtype=torch.long, device=device)
    distance = pos[:, None] - pos[None, :]  # i - j: positive when the key is before the query
    half = NUM_BUCKETS // 2
    buckets = (distance < 0).long() * half  # keys after the query use the upper half
    distance = distance.abs()
    exact = half // 2
    # The same float32 operations in the same order as the reference, so rounding at bucket edges agrees.
    scaled = torch.log(distance.clamp(min=1).float() / exact) / math.log(MAX_DISTANCE / exact) * (half - exact)
    far = (exact + scaled.long()).clamp(max=half - 1)
    return buckets + torch.where(distance < exact, distance, far)


class RelativePositionBias(nn.Module):
    """MPNet's learnt bias table ``(buckets, heads)``; ``forward(T, device) -> (1, heads, T, T)``."""

    def __init__(self, table: nn.Embedding) -> None:
        super().__init__()
        self.table = table
        self._buckets: dict[tuple[int, str], Tensor] = {}

    def forward(self, length: int, device: torch.device) -> Tensor:
        key = (length, str(device))
        if key not in self._buckets:
            if len(self._buckets) > 64:  # token counts are few in practice; bound the cache anyway
                self._buckets.clear()
            self._buckets[key] = relative_position_buckets(length, device)
        return self.table(self._buckets[key]).permute(2, 0, 1).unsqueeze(0)


class MPNetBlock(nn.Module):
    """One ``MPNetLayer`` as a ``(B, T, D) -> (B, T, D)`` map: no attention mask, the bias for this T."""

    def __init__(self, layer: nn.Module, bias: RelativePositionBias | None) -> None:
        super().__init__()
        self.layer = layer
        object.__setattr__(self, "bias", bias)  # a reference, not a submodule (see the module docstring)

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias(x.shape[1], x.device)
        out = self.layer(x, attention_mask=None, position_bias=bias)
        return out[0] if isinstance(out, tuple) else out


def mpnet_blocks(encoder: nn.Module, relative_bias: bool) -> tuple[nn.ModuleList, RelativePositionBias | None]:
    """The blocks of an ``MPNetEncoder`` and the bias they share (``None`` when ``relative_bias`` is off)."""
    bias = RelativePositionBias(encoder.relative_attention_bias) if relative_bias else None
    return nn.ModuleList(MPNetBlock(layer, bias) for layer in encoder.layer), bias
