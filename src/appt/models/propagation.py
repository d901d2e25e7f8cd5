"""Feature propagation (PointNet++): carry features from sparse centres back to denser points.

Part segmentation needs a label for every input point, but the backbone only sees the ``G``
coarsest centres. Each step interpolates the coarse features onto the next finer level of the
point embedding (inverse-distance weights over the 3 nearest centres), concatenates that level's
own features (the skip connection) and applies a small per-point MLP.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from appt.embedding.layers import LinearBNReLU
from appt.geometry import gather, knn


def interpolate(fine_xyz: Tensor, coarse_xyz: Tensor, coarse_feat: Tensor, k: int = 3, eps: float = 1e-8) -> Tensor:
    """Inverse-distance-weighted ``k``-NN interpolation onto ``fine_xyz``.

    ``fine_xyz (B, N, 3), coarse_xyz (B, M, 3), coarse_feat (B, M, C) -> (B, N, C)``. Weights are
    ``1 / (d^2 + eps)`` normalised over the neighbours (as PointNet++), so a fine point that is
    itself a centre takes that centre's feature.
    """
    idx = knn(fine_xyz, coarse_xyz, k)  # (B, N, k)
    d2 = (gather(coarse_xyz, idx) - fine_xyz.unsqueeze(2)).square().sum(-1)  # (B, N, k)
    weight = 1.0 / (d2 + eps)
    weight = weight / weight.sum(dim=-1, keepdim=True)
    return (gather(coarse_feat, idx) * weight.unsqueeze(-1)).sum(dim=2)


class FeaturePropagation(nn.Module):
    """One step coarse -> fine: ``MLP([interpolate(coarse), skip])``.

    ``(fine_xyz (B, N, 3), coarse_xyz (B, M, 3), skip (B, N, C_skip), coarse_feat (B, M, C_coarse))
    -> (B, N, out_dim)``.
    """

    def __init__(self, coarse_dim: int, skip_dim: int, out_dim: int, k: int = 3) -> None:
        super().__init__()
        self.k = k
        self.mlp = nn.Sequential(LinearBNReLU(coarse_dim + skip_dim, out_dim), LinearBNReLU(out_dim, out_dim))

    def forward(self, fine_xyz: Tensor, coarse_xyz: Tensor, skip: Tensor, coarse_feat: Tensor) -> Tensor:
        up = interpolate(fine_xyz, coarse_xyz, coarse_feat, self.k)
        return self.mlp(torch.cat((up, skip), dim=-1))


class PropagationDecoder(nn.Module):
    """All steps, coarsest level to the input points.

    ``levels``: the embedding's ``stages`` ``[(xyz_0, f_0), ..., (xyz_S, f_S)]`` (level 0 = input
    points); ``feat (B, N_S, C)`` lives on ``xyz_S``. Step ``s = S..1`` interpolates onto level
    ``s - 1`` with skip ``f_{s-1}``; the result is ``(B, N_0, out_widths[-1])``.
    ``skip_dims``: channels of ``f_0 .. f_{S-1}``; ``out_widths``: one per step, coarse to fine.
    """

    def __init__(self, in_dim: int, skip_dims: list[int], out_widths: list[int], k: int = 3) -> None:
        super().__init__()
        if len(skip_dims) != len(out_widths):
            raise ValueError(f"need one width per propagation step: {len(skip_dims)} steps, {len(out_widths)} widths")
        steps = []
        for skip_dim, out_dim in zip(reversed(skip_dims), out_widths):
            steps.append(FeaturePropagation(in_dim, skip_dim, out_dim, k))
            in_dim = out_dim
        self.steps = nn.ModuleList(steps)
        self.out_dim = in_dim

    def forward(self, levels: list[tuple[Tensor, Tensor]], feat: Tensor) -> Tensor:
        coarse_xyz = levels[-1][0]
        for step, (fine_xyz, skip) in zip(self.steps, reversed(levels[:-1])):
            feat = step(fine_xyz, coarse_xyz, skip, feat)
            coarse_xyz = fine_xyz
        return feat
