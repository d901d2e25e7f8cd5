"""Activation checkpointing (``train.activation_checkpointing``): keep fewer activations, recompute.

Why: in a training step of ``appt`` most of the memory is activations saved for the backward pass
(the frozen blocks' attention/MLP intermediates, and the embedding's ``(B, G, k, C)`` grouped
features), not weights. Wrapping a module call in ``torch.utils.checkpoint`` (non-reentrant) keeps
only its inputs and runs it again during the backward pass, trading compute for memory.

Modes: ``off`` (default: plain calls, the step is bitwise what it was before this module existed),
``backbone`` (each frozen block is recomputed), ``all`` (also the embedding's grouped stages; their
FPS and kNN searches run once, outside the recomputed call, see ``appt.embedding.Grouping``).
Own direct block calls are wrapped here rather than through timm's ``set_grad_checkpointing`` or
transformers' ``gradient_checkpointing_enable``: the trunk calls the blocks one by one (to insert
prompts between them), so those switches, which act inside the libraries' own forward loops, never run.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

CHECKPOINT_MODES = ("off", "backbone", "all")


@contextlib.contextmanager
def _keep_norm_statistics(module: nn.Module) -> Iterator[None]:
    """Undo what a recomputation does to BatchNorm running statistics (a training-mode forward
    updates them; the recomputed forward must not update them a second time)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    saved = [{k: v.clone() for k, v in m.named_buffers(recurse=False) if v is not None} for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, buffers in zip(norms, saved):
                for name, value in buffers.items():
                    getattr(m, name).copy_(value)


def checkpointed(module: nn.Module, *args: Any) -> Any:
    """``module(*args)`` that stores only ``args`` for the backward pass and recomputes the rest.

    Non-reentrant (``use_reentrant=False``): works when only some inputs need a gradient, with
    frozen parameters, and under DDP. RNG state is restored for the recomputation (dropout
    draws the same mask); BatchNorm running statistics are updated once, not twice.
    """
    def contexts() -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
        return contextlib.nullcontext(), _keep_norm_statistics(module)

    return checkpoint(module, *args, use_reentrant=False, context_fn=contexts)


def call(module: Callable[..., Any], *args: Any, recompute: bool) -> Any:
    """``module(*args)``, checkpointed when ``recompute`` and gradients are being recorded."""
    if recompute and torch.is_grad_enabled():
        return checkpointed(module, *args)
    return module(*args)


def set_activation_checkpointing(model: nn.Module, mode: str) -> None:
    """Switch an ``APPTModel`` to ``mode`` (one of ``CHECKPOINT_MODES``); a runtime setting, not
    part of the saved model config (the numbers are the same either way)."""
    if mode not in CHECKPOINT_MODES:
        raise ValueError(f"activation_checkpointing must be one of {', '.join(CHECKPOINT_MODES)}, got {mode!r}")
    model.activation_checkpointing = mode
    model.embedding.checkpoint_stages = mode == "all"


__all__ = ["CHECKPOINT_MODES", "call", "checkpointed", "set_activation_checkpointing"]
