"""Point-prompts: made by the embedding's own output, inserted before every frozen block.

The prompt for a cloud is ``max + mean`` over its point tokens ``(B, G, D) -> (B, 1, D)``: a
global summary produced by the point embedding itself, so the generator *shares its weights*
with the embedding and adds no parameters. Insertion is cumulative (as in the paper): before
block ``i`` the sequence keeps its ``c`` class tokens and the ``i`` earlier prompt outputs,
appends a fresh copy of the prompt, then the ``G`` point tokens, so after ``P`` prompted blocks
the length is ``c + P + G``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def make_prompt(tokens: Tensor) -> Tensor:
    """Global point-prompt ``(B, G, D) -> (B, 1, D)`` (max + mean over tokens)."""
    return tokens.amax(dim=1, keepdim=True) + tokens.mean(dim=1, keepdim=True)


def insert_prompt(x: Tensor, prompt: Tensor, num_prefix: int, num_points: int) -> Tensor:
    """Sequence before a prompted block: ``[x[:, :num_prefix], prompt, x[:, -num_points:]]``.

    ``x (B, T, D)``, ``prompt (B, 1, D)`` -> ``(B, num_prefix + 1 + num_points, D)``.
    """
    return torch.cat((x[:, :num_prefix], prompt, x[:, x.shape[1] - num_points :]), dim=1)
