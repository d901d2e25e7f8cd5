"""``APPTForPartSegmentation``: the trunk read at several depths, propagated back to every point.

What differs from classification (appt's own, simpler model; the authors' ``APF_Seg`` differs, see
``docs/method.md``):
- the point-prompt is recomputed before each prompted block as ``max + mean`` over the *current*
  point tokens (still inserted cumulatively), instead of once from the embedding's output
  (prompt source ``"points"`` of ``appt.embedding.point_prompts``);
- the point tokens are read after several blocks (default: at 1/3, 2/3 and all of the depth),
  each normed by the trainable final norm and averaged into one feature per centre;
- PointNet++ feature propagation carries the centre features back through the embedding's
  levels to every input point, and a per-point head, told the object category, scores the parts.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from appt.embedding import PromptPlan
from appt.errors import ConfigError
from appt.models.base import APPTModel
from appt.models.config import APPTConfig
from appt.models.heads import ClassificationHead
from appt.models.propagation import PropagationDecoder


def default_feature_blocks(depth: int) -> tuple[int, ...]:
    """1-based blocks read by default: those at a third, two thirds and all of ``depth``."""
    return tuple(sorted({max(1, round(depth * f)) for f in (1 / 3, 2 / 3, 1.0)}))


class APPTForPartSegmentation(APPTModel):
    """``points (B, N, C_in), category (B,) long -> per-point part logits (B, N, num_classes)``.

    ``num_classes`` counts the parts of all categories (50 for ShapeNetPart); restricting the
    scores to one category's parts is the metric's job (``appt.evaluation.seg_metrics``).
    """

    def __init__(self, config: APPTConfig) -> None:
        if config.readout_depths:
            raise ConfigError("model.readout_depths is for classification; part segmentation reads seg_feature_blocks")
        super().__init__(config)
        emb = self.embedding
        skip_dims = [emb.raw.bn.num_features] + [stage.bn.num_features for stage in emb.stages[:-1]]
        widths = config.seg_fp_widths
        if len(widths) == 1:
            widths = widths * len(skip_dims)
        self.decoder = PropagationDecoder(self.width, skip_dims, list(widths))
        self.category_embed = nn.Embedding(config.num_categories, config.seg_category_dim)  # = a projected one-hot
        self.head = ClassificationHead(
            self.decoder.out_dim + config.seg_category_dim, config.num_classes, config.head_hidden, config.head_dropout
        )
        self._set_trainable()

    def plan_prompts(self) -> PromptPlan:
        """A fresh prompt from the current point tokens before each prompted block; the ``G`` point
        tokens read after each of ``seg_feature_blocks`` (``(B, L * G, D)`` stacked; the trunk's final
        norm acts per token, so it norms each depth alike)."""
        return self._prompt_plan("points", "points", "seg_feature_blocks", default_feature_blocks(self.backbone.depth))

    def forward(self, points: Tensor, category: Tensor) -> Tensor:
        b, n = points.shape[:2]
        if category.shape != (b,) or category.dtype != torch.long:
            raise ValueError(f"expected category of shape ({b},) and dtype long, got {tuple(category.shape)} {category.dtype}")
        # The range check reads the ids on the host: done for CPU tensors only, so a GPU step never
        # waits on it (the data pipeline has checked every shape's category and parts).
        if category.device.type == "cpu" and category.numel() and not (
            0 <= int(category.min()) <= int(category.max()) < self.config.num_categories
        ):
            raise ValueError(f"category ids must lie in 0..{self.config.num_categories - 1}, got {category.tolist()}")
        tokens, emb = self.encode(points)  # (B, L * G, D), already normed
        centre_feat = tokens.unflatten(1, (-1, self.embedding.num_tokens)).mean(dim=1)  # (B, G, D)
        feat = self.decoder(emb.stages, centre_feat)  # (B, N, C)
        cat = self.category_embed(category).unsqueeze(1).expand(-1, n, -1)
        return self.head(torch.cat((feat, cat), dim=-1))
