"""Which arithmetic kernels a training session runs on, so a resumed run can say when they changed.

Resuming is bit-exact only on the same kernels: torch, MKL and oneDNN pick AVX-512 code where the
CPU has it, and its sums round differently from the AVX2 code's, so a run started on one machine
and resumed on another drifts (measured 2026-12-07: the README demo gave 84.58 % test OA with AVX2
kernels and 83.92 % with AVX-512 ones, same machine and commit; docs/cli.md "Resuming is exact").
The signature is saved in the resumable checkpoint; on resume a change is reported, not refused:
the run goes on, only its bits no longer equal an uninterrupted run's.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where the signature is taken: the queue reads AVX2_KERNELS without it
    import torch

# torch's own CPU kernels, MKL and oneDNN held to AVX2: an AVX-512 machine then trains the bits an
# AVX2 machine trains (each variable is read once, when its library starts).
AVX2_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def kernel_signature(device: torch.device) -> dict[str, Any]:
    """What decides the rounding of this process's arithmetic on ``device``: the GPU's name (or
    ``cpu``), torch's CPU kernel instruction set, and the MKL / oneDNN limits set in the environment."""
    import torch

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return {
        "device": name,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        **{var: os.environ.get(var) for var in AVX2_KERNELS if var != "ATEN_CPU_CAPABILITY"},
    }


def describe_kernels(signature: dict[str, Any]) -> str:
    """``AVX512 (MKL_ENABLE_INSTRUCTIONS=AVX2)``: the CPU kernel set and any limit set on the libraries."""
    limits = [f"{k}={v}" for k, v in signature.items() if k not in ("device", "cpu_capability") and v is not None]
    return f"{signature['cpu_capability']} ({', '.join(limits) or 'MKL and oneDNN unlimited'})"


def describe_change(before: dict[str, Any], now: dict[str, Any]) -> str | None:
    """One line for the user when ``now`` differs from ``before`` (``None`` when they agree)."""
    changed = [f"{key} {before.get(key)} -> {now.get(key)}" for key in sorted(set(before) | set(now))
               if before.get(key) != now.get(key)]
    if not changed:
        return None
    hint = ""
    if before.get("device") == now.get("device") == "cpu":  # a GPU's kernels cannot be held so
        hint = (" To train the same bits on any AVX2-capable CPU, start and resume with "
                + " ".join(f"{k}={v}" for k, v in AVX2_KERNELS.items()) + ".")
    return (f"note: this run's kernels changed since its last checkpoint ({', '.join(changed)}); it goes on, "
            f"but its weights will not equal an uninterrupted run's bit for bit.{hint}")


__all__ = ["AVX2_KERNELS", "describe_change", "describe_kernels", "kernel_signature"]
