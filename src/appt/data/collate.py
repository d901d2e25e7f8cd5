"""Batching samples: stack equal-sized clouds, refuse unequal ones with a clear message.

Why not only torch's default collate: when clouds differ in size (``num_points=None``), it fails
with "stack expects each tensor to be equal size" and no hint of which file or what to change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from appt.errors import DataError


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``[{"points": (N, C), "label": (), "path": str, ...}] -> {"points": (B, N, C), "label": (B,), "path": [str]}``.

    Tensors are stacked, strings gathered in lists. Clouds of different N raise :class:`DataError`
    naming the first file whose size differs from the first sample's.
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    first = samples[0]
    for s in samples[1:]:
        for key, value in s.items():
            if isinstance(value, torch.Tensor) and value.shape != first[key].shape:
                raise DataError(
                    s.get("path", "?"),
                    f"'{key}' has shape {tuple(value.shape)} but the batch's first sample has "
                    f"{tuple(first[key].shape)}; set num_points so that clouds stack",
                )
    return {
        key: torch.stack([s[key] for s in samples]) if isinstance(value, torch.Tensor) else [s[key] for s in samples]
        for key, value in first.items()
    }
