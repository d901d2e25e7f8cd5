"""Activation checkpointing (``train.activation_checkpointing``): keep fewer activations, recompute.

Why: in a training step of ``appt`` most of the memory is activations saved for the backward pass
(the frozen blocks' attention/MLP intermediates, and the embedding's ``(B, G, k, C)`` grouped
features), not weights. Wrapping a module call in ``torch.utils.checkpoint`` (non-reentrant) keeps
only its inputs and runs it again during the backward pass, trading compute for memory.

Modes: ``off`` (default: plain calls, the step is bitwise what it was before this module existed),
``backbone`` (each frozen block is recomputed), ``all`` (also the embedding's grouped stages; their
FPS and kNN searches run once, outside the recomputed call, see ``appt.embedding.Grouping``),
``selective`` (the embedding's stages recomputed as with ``all``; each frozen block keeps the outputs
of its matrix products, which are most of its compute, and recomputes only the cheap ops between
them: norms, activations, softmax, adds; less memory than ``backbone`` and less extra time than
``all``, see docs/benchmarks.md).
Own direct block calls are wrapped here rather than through timm's ``set_grad_checkpointing`` or
transformers' ``gradient_checkpointing_enable``: the trunk calls the blocks one by one (to insert
prompts between them), so those switches, which act inside the libraries' own forward loops, never run.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.utils.checkpoint import (
    CheckpointPolicy,
    checkpoint,
    create_selective_checkpoint_contexts,
)

# What each mode does to a frozen block and to an embedding stage (``call``'s ``recompute``).
BLOCK_RECOMPUTE = {"off": "off", "backbone": "full", "all": "full", "selective": "selective"}
STAGE_RECOMPUTE = {"off": "off", "backbone": "off", "all": "full", "selective": "full"}
CHECKPOINT_MODES = tuple(BLOCK_RECOMPUTE)

# The ops whose outputs a ``selective`` recomputation keeps (matrix products and fused attention).
_KEPT_OPS = {
    getattr(torch.ops.aten, name)
    for name in ("mm", "addmm", "bmm", "baddbmm", "_scaled_dot_product_flash_attention_for_cpu",
                 "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
                 "_scaled_dot_product_cudnn_attention", "convolution")
    if hasattr(torch.ops.aten, name)
}


def _keep_products(_ctx: Any, op: Any, *_args: Any, **_kwargs: Any) -> CheckpointPolicy:
    """The ``selective`` policy: store matrix-product outputs, recompute the rest."""
    return CheckpointPolicy.MUST_SAVE if op.overloadpacket in _KEPT_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None elsewhere (macOS, Windows, musl)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _find_malloc_trim()


@contextlib.contextmanager
def _heap_released(module: nn.Module) -> Iterator[None]:
    """Hand free heap pages back to the OS before a recomputation on the CPU (glibc only).

    Why: when the backward pass reaches the embedding, the frozen blocks' saved tensors (a few MiB
    each, so on glibc's heap) have just been freed but stay resident, while the stage's large
    ``(B, G, k, C)`` tensors (over glibc's mmap threshold) are mapped afresh beside them, so the
    resident peak grows well past the live tensors' (docs/benchmarks.md, section 2, third run). The
    released pages are faulted in again when reused, which costs time.
    """
    if _MALLOC_TRIM is not None and all(p.device.type == "cpu" for p in module.parameters()):
        _MALLOC_TRIM(0)
    yield


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


def checkpointed(module: nn.Module, *args: Any, selective: bool = False, release_heap: bool = False) -> Any:
    """``module(*args)`` that stores only ``args`` for the backward pass and recomputes the rest;
    ``selective``: it also stores the matrix products' outputs, so only the cheap ops run again;
    ``release_heap``: free heap pages go back to the OS before the recomputation (``_heap_released``).

    Non-reentrant (``use_reentrant=False``): works when only some inputs need a gradient, with
    frozen parameters, and under DDP. RNG state is restored for the recomputation (dropout
    draws the same mask); BatchNorm running statistics are updated once, not twice.
    """
    def contexts() -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
        forward, recompute = (create_selective_checkpoint_contexts(_keep_products) if selective
                              else (contextlib.nullcontext(), contextlib.nullcontext()))
        # entered in this order: the statistics are read and restored outside the selective mode
        before = [_heap_released(module)] if release_heap else []
        return forward, _entered(*before, _keep_norm_statistics(module), recompute)

    return checkpoint(module, *args, use_reentrant=False, context_fn=contexts)


@contextlib.contextmanager
def _entered(*contexts: contextlib.AbstractContextManager) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for context in contexts:
            stack.enter_context(context)
        yield


def call(module: Callable[..., Any], *args: Any, recompute: str = "off", release_heap: bool = False) -> Any:
    """``module(*args)``; while gradients are recorded, checkpointed as ``recompute`` says: ``off``,
    ``full`` (keep only the inputs) or ``selective`` (also keep matrix products); see ``checkpointed``."""
    if recompute == "off" or not torch.is_grad_enabled():
        return module(*args)
    return checkpointed(module, *args, selective=recompute == "selective", release_heap=release_heap)


def set_activation_checkpointing(model: nn.Module, mode: str) -> None:
    """Switch an ``APPTModel`` to ``mode`` (one of ``CHECKPOINT_MODES``); a runtime setting, not
    part of the saved model config (the numbers are the same either way)."""
    if mode not in CHECKPOINT_MODES:
        raise ValueError(f"activation_checkpointing must be one of {', '.join(CHECKPOINT_MODES)}, got {mode!r}")
    model.activation_checkpointing = mode
    model.embedding.recompute_stages = STAGE_RECOMPUTE[mode]


__all__ = ["BLOCK_RECOMPUTE", "CHECKPOINT_MODES", "STAGE_RECOMPUTE", "call", "checkpointed", "set_activation_checkpointing"]
