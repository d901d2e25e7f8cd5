"""The run's memory settings applied to a freshly built model (``train.activation_checkpointing``,
``train.frozen_dtype``); see :mod:`appt.recompute` and :mod:`appt.models.frozen_dtype` for why."""

from __future__ import annotations

import torch
from torch import nn

from appt.models.frozen_dtype import cast_frozen, resolve_frozen_dtype
from appt.recompute import set_activation_checkpointing


def apply_memory_settings(model: nn.Module, checkpointing: str, frozen_dtype: str, precision: str,
                          device_type: str) -> torch.dtype | None:
    """Switch checkpointing on ``model`` and cast its frozen weights as the settings ask, before the
    optimizer and Accelerate see it. Returns the frozen dtype chosen (``None``: fp32 kept).
    With every setting at its default (``off``, and ``auto`` under ``precision: no``) nothing changes."""
    set_activation_checkpointing(model, checkpointing)
    dtype = resolve_frozen_dtype(frozen_dtype, precision, device_type, model)
    if dtype is not None:
        cast_frozen(model, dtype)
    return dtype


__all__ = ["apply_memory_settings"]
