"""``APPTForPartSegmentation``: the trunk read at several depths, propagated back to every point.

What differs from classification (appt's own, simpler model; the authors' ``APF_Seg`` differs, see
``docs/method.md``):
- the point-prompt is recomputed before each prompted block as ``max + mean`` over the *current*
  point tokens (still inserted cumulatively), instead of once from the embedding's output;
- the point tokens are read after several blocks (default: at 1/3, 2/3 and all of the depth),
  each normed by the trainable final norm and averaged into one feature per centre;
- PointNet++ feature propagation carries the centre features back through the embedding's
  levels to every input point, and a per-point head, told the object category, scores the parts.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from appt.embedding import insert_prompt, make_prompt
from appt.errors import ConfigError
from appt.models.base import APPTModel
from appt.models.config import APPTConfig
from appt.models.heads import ClassificationHead
from appt.models.propagation import PropagationDecoder


def default_feature_blocks(depth: int) -> tuple[int, ...]:
    """1-based blocks read by default: those at a third, two thirds and all of ``depth``."""
    return tuple(sorted({max(1, round(depth * f)) for f in (1 / 3, 2 / 3, 1.0)}))


def resolve_feature_blocks(model: APPTModel) -> tuple[int, ...]:
    """The 1-based blocks a segmentation model reads (``seg_feature_blocks``, default a third, two
    thirds and all of the depth), checked against its backbone; ``()`` without a backbone."""
    if model.backbone is None:
        return ()
    depth = model.backbone.depth
    blocks = tuple(sorted(set(model.config.seg_feature_blocks))) or default_feature_blocks(depth)
    if blocks[-1] > depth:
        raise ConfigError(f"model.seg_feature_blocks: block {blocks[-1]} is beyond the backbone's depth {depth}")
    return blocks


class APPTForPartSegmentation(APPTModel):
    """``points (B, N, C_in), category (B,) long -> per-point part logits (B, N, num_classes)``.

    ``num_classes`` counts the parts of all categories (50 for ShapeNetPart); restricting the
    scores to one category's parts is the metric's job (``appt.training.seg_metrics``).
    """

    def __init__(self, config: APPTConfig) -> None:
        if config.readout_depths:
            raise ConfigError("model.readout_depths is for classification; part segmentation reads seg_feature_blocks")
        super().__init__(config)
        self.feature_blocks = resolve_feature_blocks(self)
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

    @property
    def blocks_run(self) -> int:
        return resolve_feature_blocks(self)[-1] if self.backbone is not None else 0

    def run_backbone(self, x: Tensor, prompt: Tensor) -> Tensor:
        """Frozen blocks with a per-block prompt; ``(B, c + G, D) -> (B, L * G, D)``.

        Returns the ``G`` point tokens after each of the ``L`` blocks in ``feature_blocks``,
        stacked along the token axis (the trunk's final norm acts per token, so it norms each
        depth alike). Blocks after the last one read are not run. ``prompt`` (the trunk's fixed
        prompt) is unused: before prompted block ``i`` a fresh prompt, ``max + mean`` over the
        current point tokens, is inserted after the ``c + i`` kept tokens.
        """
        backbone = self.backbone
        num_points = self.embedding.num_tokens
        x = backbone.prepare_tokens(x)
        read: list[Tensor] = []
        for i, block in enumerate(backbone.blocks[: self.feature_blocks[-1]]):
            if i < self.num_prompt_blocks:
                current = backbone.prepare_tokens(make_prompt(x[:, -num_points:]))
                x = insert_prompt(x, current, self.num_class_tokens + i, num_points)
            x = self.run_block(block, x)
            if i + 1 in self.feature_blocks:
                read.append(x[:, -num_points:])
        return torch.cat(read, dim=1)

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
