"""Small channels-last building blocks shared by the point embedding and the heads.

Tensors stay ``(..., C)`` throughout (no transposes to ``(B, C, N)``); BatchNorm is applied over
all leading dimensions flattened, which equals ``BatchNorm1d`` on ``(B, C, N)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


def batch_norm(x: Tensor, bn: nn.BatchNorm1d, relu: bool = False, residual: Tensor | None = None) -> Tensor:
    """Apply ``bn``, then add ``residual`` (same shape as ``x``) and apply ReLU when asked, to a
    channels-last tensor ``(..., C) -> (..., C)``.

    The addition and the ReLU run in place on BatchNorm's own output, before the reshape: BatchNorm's
    backward needs only its input, the addition's nothing, the ReLU's only its result. That saves a
    fresh ``(..., C)`` tensor per step, and on the CPU fresh large tensors cost page faults. In place
    on the reshaped *view* instead, autograd would copy the whole gradient in the backward pass
    (``CopySlices``). ``y + r`` equals ``r + y`` bit for bit, so the order changes no value.
    """
    shape = x.shape
    y = bn(x.reshape(-1, shape[-1]))
    if residual is not None:
        y.add_(residual.reshape(-1, shape[-1]))
    return (y.relu_() if relu else y).reshape(shape)


class _MaxPool(torch.autograd.Function):
    """``x.amax(dim)`` with amax's own gradient, bit for bit, computed more cheaply.

    Autograd's amax backward, ``(g / mask.sum(dim)) * mask`` with ``mask = x == max``, converts the
    boolean mask of the whole input to int64 for the count and to float for the product: two
    full-size copies. Here the count is summed in uint8 (exact: fewer than 256 entries) and the
    product is a ``where`` between ``g / count`` and ``g / count * 0`` — the very values the product
    gives (signed zeros and NaN included). Tied maxima still split the gradient evenly.
    """

    @staticmethod
    def forward(ctx, x: Tensor, dim: int) -> Tensor:  # type: ignore[override]
        out = x.amax(dim=dim, keepdim=True)
        ctx.save_for_backward(x, out)
        ctx.dim = dim
        return out.squeeze(dim)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        x, out = ctx.saved_tensors
        mask = x == out
        count = mask.view(torch.uint8).sum(ctx.dim, keepdim=True, dtype=torch.uint8)
        share = grad.unsqueeze(ctx.dim) / count
        return torch.where(mask, share, share * 0.0), None


def max_pool(x: Tensor, dim: int) -> Tensor:
    """``x.amax(dim)`` (the dimension dropped); its backward is cheaper, the same values
    (``_MaxPool``). For pooling ``k < 256`` neighbours, e.g. ``(B, G, k, C) -> (B, G, C)``."""
    if not (x.requires_grad and torch.is_grad_enabled()) or x.shape[dim] > 255:
        return x.amax(dim=dim)
    return _MaxPool.apply(x, dim)


class LinearBNReLU(nn.Module):
    """Per-point linear layer (a 1x1 convolution) + BatchNorm + ReLU, ``(..., Cin) -> (..., Cout)``.

    ``bias``: the linear layer's bias, which the BatchNorm cancels exactly (off by default; the
    authors' model has it, so their checkpoints and parameter count need it).
    """

    def __init__(self, in_dim: int, out_dim: int, relu: bool = True, bias: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim, bias=bias)
        self.bn = nn.BatchNorm1d(out_dim)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        return batch_norm(self.linear(x), self.bn, relu=self.relu)


class ResidualBlock(nn.Module):
    """Two 1x1 layers with a skip connection, ``(..., C) -> (..., C)``.

    ``expansion`` sets the hidden width; below 1 it is a bottleneck, which keeps the trainable
    count of a ViT-B-wide embedding under the method's ~5 % budget.
    """

    def __init__(self, dim: int, expansion: float = 0.5, bias: bool = False) -> None:
        super().__init__()
        hidden = max(1, int(round(dim * expansion)))
        self.inner = LinearBNReLU(dim, hidden, bias=bias)
        self.outer = LinearBNReLU(hidden, dim, relu=False, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        # ``relu(x + outer(inner(x)))``, the sum and ReLU in place on the outer BatchNorm's output
        return batch_norm(self.outer.linear(self.inner(x)), self.outer.bn, relu=True, residual=x)
