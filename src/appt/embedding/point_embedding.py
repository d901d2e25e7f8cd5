"""The trainable point embedding: raw points -> ``G`` tokens at the backbone's width.

A Point-PN-style hierarchy: a per-point linear embedding, then ``S`` stages that each sample
centres by FPS, group ``k`` neighbours, aggregate local geometry and pool. Its last feature map
is also the source of the point-prompts (see ``prompts.py``), which is why the prompt generator
needs no parameters of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from appt.embedding.geometry_encoding import GeometryEncoding
from appt.embedding.group_scaling import GROUP_SCALINGS, scale_groups
from appt.embedding.layers import LinearBNReLU, ResidualBlock, batch_norm, max_pool
from appt.geometry import farthest_point_sample, gather, knn
from appt.recompute import call


@dataclass
class EmbeddingOutput:
    """What the embedding hands on.

    ``tokens``: ``(B, G, D)`` last-stage features (the point embeddings);
    ``centers``: ``(B, G, 3)`` their xyz;
    ``stages``: per level ``(xyz (B, N_s, 3), features (B, N_s, C_s))``, level 0 being the input
    points — what segmentation needs to propagate features back to every point.
    """

    tokens: Tensor
    centers: Tensor
    stages: list[tuple[Tensor, Tensor]]


class Grouping(NamedTuple):
    """A stage's neighbourhoods: ``centres (B, G, 3)``, ``centre_idx (B, G)``, ``neighbours (B, G, k)``.

    Index searches (FPS, kNN) without gradients: computed once per forward pass, outside any
    recomputed region, so activation checkpointing never runs them again in the backward pass.
    """

    centres: Tensor
    centre_idx: Tensor
    neighbours: Tensor


class LocalGeometryStage(nn.Module):
    """One stage: FPS + kNN (``group``) + local geometry aggregation + max/mean pooling.

    ``(xyz (B, N, 3), feat (B, N, Cin)) -> (centres (B, G, 3), feat (B, G, Cout))``.
    The neighbour/centre concatenation followed by a linear layer is computed as two linear maps
    applied *per point before gathering* (``W [f_j, f_c] = W1 f_j + W2 f_c``): the same function,
    ``k`` times fewer multiplications, and no ``(B, G, k, 2 Cin)`` concatenation. The tensors of
    shape ``(B, G, k, C)`` that remain follow non-linear maps (BatchNorm over all groups, ReLU, the
    geometry product, the residual blocks), so no cheaper order exists for them; chunking over
    centres would change the training-mode BatchNorm statistics. Activations whose input is not
    needed by their backward run in place (bitwise the same values, fewer transient tensors).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_centers: int,
        k: int,
        num_blocks: int,
        expansion: float,
        alpha: float,
        beta: float,
        group_scaling: str = "cloud_std",
        geometry_layout: str = "pairs",
        bias: bool = False,
        chained: bool = False,
    ) -> None:
        super().__init__()
        if group_scaling not in GROUP_SCALINGS:
            raise ValueError(f"group_scaling must be one of {', '.join(GROUP_SCALINGS)}, got {group_scaling!r}")
        self.group_scaling = group_scaling
        self.num_centers = num_centers
        self.k = k
        self.chained = chained  # its input is the previous stage's centres (every stage after the first)
        self.neighbour_proj = nn.Linear(in_dim, out_dim, bias=False)
        self.centre_proj = nn.Linear(in_dim, out_dim, bias=False)
        self.bn = nn.BatchNorm1d(out_dim)
        self.geometry = GeometryEncoding(out_dim, alpha, beta, geometry_layout)
        self.blocks = nn.Sequential(*[ResidualBlock(out_dim, expansion, bias) for _ in range(num_blocks)])

    def sample_centres(self, xyz: Tensor) -> Tensor:
        """Centre indices ``(B, N, 3) -> (B, G)``. The first stage runs FPS. A later stage's input
        is the previous stage's centres, already an FPS sequence: FPS over it from its first
        point returns its first ``G`` points (the prefix property of ``farthest_point_sample``),
        so one FPS pass serves every stage and later stages need no search."""
        if not self.chained:
            return farthest_point_sample(xyz, self.num_centers)
        b, n = xyz.shape[:2]
        return (torch.arange(self.num_centers, device=xyz.device) % n).expand(b, -1)

    def group(self, xyz: Tensor) -> Grouping:
        """The stage's centres and neighbourhoods in ``xyz (B, N, 3)`` (see ``Grouping``)."""
        centre_idx = self.sample_centres(xyz)  # (B, G)
        centres = gather(xyz, centre_idx)  # (B, G, 3)
        return Grouping(centres, centre_idx, knn(centres, xyz, self.k))  # neighbours (B, G, k)

    def forward(self, xyz: Tensor, feat: Tensor, grouping: Grouping | None = None) -> tuple[Tensor, Tensor]:
        """``grouping``: ``self.group(xyz)``, searched here when not given (``PointEmbedding``
        passes it, so that a recomputation in the backward pass repeats only this differentiable part)."""
        centres, centre_idx, neighbours = self.group(xyz) if grouping is None else grouping

        rel = scale_groups(gather(xyz, neighbours) - centres.unsqueeze(2), self.group_scaling)  # (B, G, k, 3)

        # (B, G, k, Cout); out of place: ``gather`` returns a view, and an in-place add on a view
        # makes autograd copy the whole gradient in the backward pass
        h = gather(self.neighbour_proj(feat), neighbours) + self.centre_proj(gather(feat, centre_idx)).unsqueeze(2)
        h = batch_norm(h, self.bn, relu=True)
        pe = self.geometry(rel)
        h = self.blocks((h + pe).mul_(pe))
        # ``amax`` (here ``max_pool``, its cheaper backward) splits a gradient evenly between exactly
        # tied maxima; ``max(dim)``, as the authors pool, hands it to one of them. Real training
        # batches do hold such ties: the switch changed ModelNet10 training from its fourth step on,
        # in the last bits, so amax's gradient stays and runs repeat those made before
        return centres, max_pool(h, 2) + h.mean(dim=2)


class PointEmbedding(nn.Module):
    """Raw points ``(B, N, C_in)`` (xyz first) -> ``EmbeddingOutput`` with ``G = centers[-1]`` tokens.

    ``widths[-1]`` is the token width; when it differs from ``out_dim`` a final linear layer maps
    it there ("linear layers to the frozen model's width"). ``group_scaling`` (see
    ``group_scaling.py``), ``geometry_layout`` (see ``GeometryEncoding``) and ``bias`` (the residual
    blocks' BatchNorm-cancelled biases) exist to match the authors' encoder exactly.
    ``recompute_stages`` (``full`` under ``train.activation_checkpointing: all`` or ``selective``)
    recomputes each stage in the backward pass instead of storing its ``(B, G, k, C)`` intermediates,
    handing the CPU heap's free pages back first (``appt.recompute``).
    """

    recompute_stages: str = "off"  # off | full | selective (``appt.recompute.call``)

    def __init__(
        self,
        in_channels: int,
        out_dim: int,
        embed_dim: int = 96,
        centers: tuple[int, ...] = (512, 256, 128, 64),
        neighbors: tuple[int, ...] = (40, 40, 40, 40),
        widths: tuple[int, ...] = (192, 384, 768, 768),
        blocks: tuple[int, ...] = (2, 1, 1, 1),
        expansion: float = 0.5,
        alpha: float = 1000.0,
        beta: float = 100.0,
        group_scaling: str = "cloud_std",
        geometry_layout: str = "pairs",
        bias: bool = False,
    ) -> None:
        super().__init__()
        if in_channels < 3:
            raise ValueError(f"in_channels must be at least 3 (xyz first), got {in_channels}")
        if not (len(centers) == len(neighbors) == len(widths) == len(blocks)) or not centers:
            raise ValueError(
                "centers, neighbors, widths and blocks need one entry per stage, got "
                f"{len(centers)}, {len(neighbors)}, {len(widths)}, {len(blocks)}"
            )
        self.in_channels = in_channels
        self.raw = LinearBNReLU(in_channels, embed_dim)
        dims = (embed_dim, *widths)
        self.stages = nn.ModuleList(
            LocalGeometryStage(dims[i], dims[i + 1], centers[i], neighbors[i], blocks[i], expansion, alpha, beta,
                               group_scaling, geometry_layout, bias, chained=i > 0)
            for i in range(len(centers))
        )
        self.proj = nn.Linear(widths[-1], out_dim) if widths[-1] != out_dim else nn.Identity()

    @property
    def num_tokens(self) -> int:
        return self.stages[-1].num_centers

    def forward(self, points: Tensor) -> EmbeddingOutput:
        if points.dim() != 3 or points.shape[-1] != self.in_channels:
            raise ValueError(
                f"expected points of shape (B, N, {self.in_channels}), got {tuple(points.shape)}"
            )
        xyz = points[..., :3].contiguous()
        feat = self.raw(points)
        stages = [(xyz, feat)]
        for stage in self.stages:  # searches outside the recomputed part (see ``Grouping``)
            xyz, feat = call(stage, xyz, feat, stage.group(xyz), recompute=self.recompute_stages, release_heap=True)
            stages.append((xyz, feat))
        return EmbeddingOutput(tokens=self.proj(feat), centers=xyz, stages=stages)


__all__ = ["EmbeddingOutput", "Grouping", "LocalGeometryStage", "PointEmbedding"]
