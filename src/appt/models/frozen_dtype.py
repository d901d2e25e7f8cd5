"""Frozen weights in half precision (``train.frozen_dtype``): store and run the frozen blocks in
bf16/fp16, keep every trainable tensor in fp32.

Why: a tensor that never trains needs no fp32 master copy, gradient or optimizer state, so under
``train.precision: bf16|fp16`` its fp32 copy is only memory (and, without autocast, fp32 compute).
Casting it once halves the backbone's weights. The trunk then casts the tokens and prompt to that
dtype where they enter the blocks and the blocks' output back to fp32 for the trainable readout
(``APPTModel.encode``); the frozen weights are never cast back.

``auto`` resolves to the precision's dtype on CUDA; on CPU to bf16 only where the processor has
native bf16 dot products (AVX512-BF16 or AMX, as oneDNN reports them), since elsewhere torch
emulates bf16 matmuls and a step gets slower; fp16 on CPU stays fp32. ``fp32``: never cast.
The cast applies only when no backbone tensor trains (``appt``, ``no_prompts``, ``linear_probe``,
...): with ``lora``, ``tune_norms`` or ``full_finetune`` the blocks hold trainable fp32 tensors
and ``auto`` leaves the model as it is.
"""

from __future__ import annotations

import torch
from torch import nn

FROZEN_DTYPES = ("auto", "fp32")
HALF_PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (oneDNN's check: AVX512-BF16 / AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without the check
        return False


def backbone_is_frozen(model: nn.Module) -> bool:
    """True when the model has a backbone and none of its tensors train (the cast is then safe)."""
    backbone = getattr(model, "backbone", None)
    return backbone is not None and not any(p.requires_grad for p in backbone.parameters())


def resolve_frozen_dtype(setting: str, precision: str, device_type: str, model: nn.Module) -> torch.dtype | None:
    """The dtype ``train.frozen_dtype`` asks for on ``device_type`` (``cuda`` / ``cpu``); ``None``: fp32."""
    if setting not in FROZEN_DTYPES:
        raise ValueError(f"frozen_dtype must be one of {', '.join(FROZEN_DTYPES)}, got {setting!r}")
    dtype = HALF_PRECISIONS.get(precision)
    if setting == "fp32" or dtype is None or not backbone_is_frozen(model):
        return None
    if device_type == "cuda":
        return dtype
    return dtype if dtype == torch.bfloat16 and cpu_has_native_bf16() else None


def cast_frozen(model: nn.Module, dtype: torch.dtype) -> None:
    """Store the backbone's weights and floating buffers in ``dtype``, in place, once; the model's
    trunk then runs its blocks in ``dtype`` (``model.frozen_dtype``). Refuses a backbone that trains."""
    if not backbone_is_frozen(model):
        raise ValueError("frozen weights can be cast only when no backbone tensor trains (not lora / tune_norms / full_finetune)")
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.data = p.data.to(dtype)
        for module in model.backbone.modules():
            for name, buffer in module.named_buffers(recurse=False):
                if buffer is not None and buffer.is_floating_point():
                    setattr(module, name, buffer.to(dtype))
    model.frozen_dtype = dtype


__all__ = ["FROZEN_DTYPES", "backbone_is_frozen", "cast_frozen", "cpu_has_native_bf16", "resolve_frozen_dtype"]
