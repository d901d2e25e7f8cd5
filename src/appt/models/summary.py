"""A peft-style account of what trains."""

from __future__ import annotations

from torch import nn


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def format_parameters(trainable: int, total: int) -> str:
    """``"trainable parameters: 1,234 / total: 5,678 (21.73 %)"``: the one wording of
    ``model.summary()``, ``appt info`` and the start and end of ``appt train``."""
    return f"trainable parameters: {trainable:,} / total: {total:,} ({100.0 * trainable / max(total, 1):.2f} %)"
