"""``AuthorsPartSegmentation``: the authors' part-segmentation model (``APF_Seg``), repaired so it runs.

Selected by ``model.seg_model: authors`` (the ShapeNetPart paper preset). Read from their demo
(GitHub ``wish254/APPT``, ``models/APF_Seg.py``, ``run_pn_seg.py``) and written anew here; what
it computes, beside appt's simpler ``APPTForPartSegmentation``:

- the trunk: the point embedding's last tokens, position mixing, the backbone's bare class token;
  before block ``i`` the sequence keeps its class token and ``i`` earlier prompt outputs, then a
  prompt, then the ``G`` point tokens. The first prompt is ``max + mean`` of the embedding's
  tokens; every later one is ``max + mean`` over *all* tokens of the previous block's output
  (prompt source ``"previous"`` of ``appt.embedding.point_prompts``);
- three blocks are read (``seg_feature_blocks``, theirs 4 / 8 / 12), each through the fresh
  readout LayerNorm. Their point tokens feed three levels of a decoder: PointNet++ propagation of
  the first and second reads onto two embedding levels (theirs 512 and 256 centres) with those
  levels' xyz as skip features, two DGCNN steps that carry the deepest read down through them,
  and a last propagation onto every point whose skip is ``[category one-hot, xyz]``;
- beside it, PointNet++ propagation of the embedding's own stage features down to every point;
- per cloud, the class token and the first prompt's output of each read (``(c + 1) x 3 x D``)
  join every point's feature; the head is linear + BN + dropout + linear, no activation (theirs).

The demo's inconsistencies and how they are repaired are listed in ``docs/method.md``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from appt.embedding import PromptPlan
from appt.embedding.layers import LinearBNReLU, batch_norm
from appt.errors import ConfigError
from appt.geometry import gather, knn
from appt.models.base import APPTModel
from appt.models.config import APPTConfig
from appt.models.propagation import interpolate
from appt.models.segmentation import default_feature_blocks

GRAPH_NEIGHBOURS = 4  # their DGCNN_Propagation(k=4)
GRAPH_GROUPS = 4  # their GroupNorm(4, C)
HIDDEN_FACTOR = 4  # their PointNetFeaturePropagation(mlp=[4 w, w])


class SkipPropagation(nn.Module):
    """PointNet++ step ``[skip, interpolated] -> (linear+bias, BN, ReLU) x 2`` (hidden ``4 x out``).

    ``(fine_xyz (B, N, 3), coarse_xyz (B, M, 3), skip (B, N, C_s), coarse (B, M, C_c)) -> (B, N, out)``.
    """

    def __init__(self, skip_dim: int, coarse_dim: int, out_dim: int) -> None:
        super().__init__()
        hidden = HIDDEN_FACTOR * out_dim
        self.mlp = nn.Sequential(LinearBNReLU(skip_dim + coarse_dim, hidden, bias=True),
                                 LinearBNReLU(hidden, out_dim, bias=True))

    def forward(self, fine_xyz: Tensor, coarse_xyz: Tensor, skip: Tensor, coarse: Tensor) -> Tensor:
        return self.mlp(torch.cat((skip, interpolate(fine_xyz, coarse_xyz, coarse)), dim=-1))


class EdgeConv(nn.Module):
    """DGCNN edge step: ``max_k LeakyReLU(GN(W [f_k - f_q, f_q]))`` over the ``k`` nearest keys.

    ``(q_xyz (B, N, 3), q (B, N, C), k_xyz (B, M, 3), k (B, M, C)) -> (B, N, out)``; GroupNorm
    statistics cover the whole cloud (all points and neighbours), so they are order-free.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(2 * in_dim, out_dim, bias=False)
        self.norm = nn.GroupNorm(GRAPH_GROUPS, out_dim)

    def forward(self, q_xyz: Tensor, q: Tensor, k_xyz: Tensor, k: Tensor) -> Tensor:
        nb = gather(k, knn(q_xyz, k_xyz, GRAPH_NEIGHBOURS))  # (B, N, k, C)
        centre = q.unsqueeze(2).expand_as(nb)
        e = self.linear(torch.cat((nb - centre, centre), dim=-1))  # (B, N, k, out)
        e = self.norm(e.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return F.leaky_relu(e, 0.2).amax(dim=2)


class GraphUpsample(nn.Module):
    """Their ``DGCNN_Propagation``: coarse -> fine edge step, then one among the fine points.

    ``(coarse_xyz (B, M, 3), coarse (B, M, D), fine_xyz (B, N, 3), fine (B, N, D)) -> (B, N, D)``.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.first = EdgeConv(dim, hidden)
        self.second = EdgeConv(hidden, dim)

    def forward(self, coarse_xyz: Tensor, coarse: Tensor, fine_xyz: Tensor, fine: Tensor) -> Tensor:
        h = self.first(fine_xyz, fine, coarse_xyz, coarse)
        return self.second(fine_xyz, h, fine_xyz, h)


class AuthorsSegHead(nn.Module):
    """``local (B, N, L), global (B, F) -> logits (B, N, classes)``: linear + BN + dropout + linear.

    One linear layer over ``[local, global]``, computed as its local part per point plus its global
    part once per cloud (the same function without an ``(B, N, L + F)`` tensor).
    """

    def __init__(self, local_dim: int, global_dim: int, hidden: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.local_dim = local_dim
        self.first = nn.Linear(local_dim + global_dim, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, local: Tensor, glob: Tensor) -> Tensor:
        w = self.first.weight
        h = F.linear(local, w[:, : self.local_dim], self.first.bias)
        h = h + F.linear(glob, w[:, self.local_dim :]).unsqueeze(1)
        return self.out(self.dropout(batch_norm(h, self.bn)))


class AuthorsPartSegmentation(APPTModel):
    """``points (B, N, C_in), category (B,) long -> per-point part logits (B, N, num_classes)``.

    Needs a backbone with point-prompts, exactly three read blocks, at least three embedding
    stages and one ``head_hidden`` width. ``seg_fp_widths``: the embedding-branch widths (theirs
    512), also the DGCNN hidden width.
    """

    def __init__(self, config: APPTConfig) -> None:
        if config.readout_depths:
            raise ConfigError("model.readout_depths is for classification; part segmentation reads seg_feature_blocks")
        if len(config.head_hidden) != 1:
            raise ConfigError(
                f"model.head_hidden: the authors' segmentation head has one hidden layer, got {list(config.head_hidden)}"
            )
        if len(config.centers) < 3:
            raise ConfigError(f"seg_model authors needs at least 3 embedding stages, got {len(config.centers)}")
        super().__init__(config)
        if self.backbone is None or self.num_prompt_blocks == 0:
            raise ConfigError(f"seg_model authors needs a backbone with point-prompts (variant {config.variant!r})")
        if len(self.prompts.depths) != 3:
            raise ConfigError(
                f"model.seg_feature_blocks: seg_model authors reads exactly 3 blocks, got {list(self.prompts.depths)}"
            )
        emb, d = self.embedding, self.width
        dims = [emb.raw.bn.num_features] + [stage.bn.num_features for stage in emb.stages]  # level 0 .. S
        widths = config.seg_fp_widths * len(emb.stages) if len(config.seg_fp_widths) == 1 else config.seg_fp_widths
        steps, coarse = [], dims[-1]
        for skip_dim, width in zip(reversed(dims[:-1]), widths):
            steps.append(SkipPropagation(skip_dim, coarse, width))
            coarse = width
        self.enc_steps = nn.ModuleList(steps)  # their propagation_3 .. 7
        self.prop_mid = SkipPropagation(3, d, d)  # their propagation_2
        self.prop_fine = SkipPropagation(3, d, d)  # propagation_1
        self.graph_mid = GraphUpsample(d, widths[0])  # dgcnn_pro_2
        self.graph_fine = GraphUpsample(d, widths[0])  # dgcnn_pro_1
        self.prop_points = SkipPropagation(config.num_categories + 3, d, d)  # propagation_0
        glob = 3 * (self.num_class_tokens + 1) * d
        self.head = AuthorsSegHead(coarse + d, glob, config.head_hidden[0], config.num_classes, config.head_dropout)
        self._set_trainable()

    def plan_prompts(self) -> PromptPlan:
        """The embedding's prompt before the first block, then ``max + mean`` over every token of the
        block before; whole sequences read after each of ``seg_feature_blocks``."""
        return self._prompt_plan("previous", "sequence", "seg_feature_blocks", default_feature_blocks(self.backbone.depth))

    def forward(self, points: Tensor, category: Tensor) -> Tensor:
        b = points.shape[0]
        if category.shape != (b,) or category.dtype != torch.long:
            raise ValueError(
                f"expected category of shape ({b},) and dtype long, got {tuple(category.shape)} {category.dtype}"
            )
        tokens, emb = self.encode(points)  # normed reads, stacked
        reads = tokens.split(self.prompts.read_sizes(), dim=1)
        g, c = self.embedding.num_tokens, self.num_class_tokens
        glob = torch.cat([r[:, j] for j in range(c + 1) for r in reads], dim=-1)  # (B, 3 (c + 1) D)
        pts = [r[:, -g:] for r in reads]  # 3 x (B, G, D)
        levels = emb.stages
        xyz_fine, xyz_mid, xyz_top = levels[-4][0], levels[-3][0], levels[-1][0]
        mid = self.prop_mid(xyz_mid, xyz_top, xyz_mid, pts[1])
        fine = self.prop_fine(xyz_fine, xyz_top, xyz_fine, pts[0])
        mid = self.graph_mid(xyz_top, pts[2], xyz_mid, mid)
        fine = self.graph_fine(xyz_mid, mid, xyz_fine, fine)
        xyz = levels[0][0]
        onehot = F.one_hot(category, self.config.num_categories).to(xyz.dtype)
        skip = torch.cat((onehot.unsqueeze(1).expand(-1, xyz.shape[1], -1), xyz), dim=-1)
        trunk = self.prop_points(xyz, xyz_fine, skip, fine)  # (B, N, D)
        feat = levels[-1][1]
        for step, s in zip(self.enc_steps, range(len(levels) - 1, 0, -1)):  # level s -> s - 1
            feat = step(levels[s - 1][0], levels[s][0], levels[s - 1][1], feat)
        return self.head(torch.cat((feat, trunk), dim=-1), glob)


__all__ = ["AuthorsPartSegmentation"]
