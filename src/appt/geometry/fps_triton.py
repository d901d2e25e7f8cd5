"""Farthest-point sampling as one Triton kernel launch (CUDA).

Why: the torch loop in :func:`appt.geometry.farthest_point_sample` issues about 18 small kernels
per pick; at the GPU defaults (512 picks a forward) launch overhead, not arithmetic, sets its
time. Here each cloud is one Triton program that keeps its points and running distances in
registers for the whole loop. It does the same arithmetic in the same order as the torch loop
(``dx*dx + dy*dy + dz*dz``, min-update, first index of the maximum), so both pick the same points;
``tests/test_geometry.py`` checks that on real clouds with Triton's CPU interpreter.

Used for CUDA tensors of up to ``MAX_POINTS`` points when Triton imports (it is imported on the
first CUDA call only); otherwise the torch loop runs. ``APPT_FPS=torch`` forces the torch loop.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch
from torch import Tensor

MAX_POINTS = 16384  # one program holds a cloud's coordinates in registers


@functools.cache
def _kernel() -> Any:
    """The jitted kernel, or None without Triton (CPU-only installs)."""
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None

    @triton.jit
    def fps_kernel(planes_ptr, start_ptr, out_ptr, num, picks, BLOCK: tl.constexpr):
        """One cloud per program: ``planes (B, 3, N)`` float32, ``start (B,)``, ``out (B, picks)``."""
        b = tl.program_id(0)
        offs = tl.arange(0, BLOCK)
        valid = offs < num
        base = planes_ptr + b * 3 * num
        x = tl.load(base + offs, mask=valid, other=0.0)
        y = tl.load(base + num + offs, mask=valid, other=0.0)
        z = tl.load(base + 2 * num + offs, mask=valid, other=0.0)
        dist = tl.where(valid, float("inf"), -1.0)  # padding lanes can never be the farthest
        far = tl.load(start_ptr + b)
        for i in range(picks):
            tl.store(out_ptr + b * picks + i, far)
            dx = x - tl.load(base + far)
            dy = y - tl.load(base + num + far)
            dz = z - tl.load(base + 2 * num + far)
            dist = tl.where(valid, tl.minimum(dist, dx * dx + dy * dy + dz * dz), -1.0)
            far = tl.argmax(dist, axis=0).to(tl.int64)

    return fps_kernel


def available(xyz: Tensor) -> bool:
    """Whether the kernel serves ``xyz (B, N, 3)``: CUDA, N small enough, Triton importable."""
    if not xyz.is_cuda or xyz.shape[1] > MAX_POINTS or os.environ.get("APPT_FPS", "") == "torch":
        return False
    return _kernel() is not None


def farthest_point_sample_triton(xyz: Tensor, n: int, start: Tensor) -> Tensor:
    """``(B, N, 3), n, start (B,) long -> (B, n)`` long indices; ``n <= N`` (the caller handles more)."""
    kernel = _kernel()
    if kernel is None:
        raise RuntimeError("farthest_point_sample_triton needs the triton package")
    b, num, _ = xyz.shape
    planes = xyz.float().permute(0, 2, 1).contiguous()  # (B, 3, N)
    out = torch.empty(b, n, dtype=torch.long, device=xyz.device)
    block = 1 << max(num - 1, 1).bit_length()  # the next power of two >= num
    kernel[(b,)](planes, start.long().contiguous(), out, num, n, BLOCK=block)
    return out
