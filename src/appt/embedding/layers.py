"""Small channels-last building blocks shared by the point embedding and the heads.

Tensors stay ``(..., C)`` throughout (no transposes to ``(B, C, N)``); BatchNorm is applied over
all leading dimensions flattened, which equals ``BatchNorm1d`` on ``(B, C, N)``.
"""

from __future__ import annotations

from torch import Tensor, nn


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
