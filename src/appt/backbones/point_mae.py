"""Point-MAE / Point-BERT transformer encoder as a frozen APPT backbone.

The encoder is the standard point-transformer trunk of Point-BERT and Point-MAE (12 pre-LN blocks
of width 384, 6 heads, qkv without bias). Its modules carry the official parameter names
(``cls_token``, ``cls_pos``, ``blocks.blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``,
``norm``) so the authors' ``pretrain.pth`` files load after stripping their key prefixes. The
point tokenizer (mini-PointNet + centre MLP) is not part of the backbone: APPT brings its own.

Point-MAE adds its position embedding before *every* block; through this adapter the blocks are
plain ``(B, T, D) -> (B, T, D)`` maps and position information is whatever the caller put in the
tokens (APPT adds its own table once).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from appt.backbones._loading import check_options, load_checked, logger, read_state_dict, seeded, strip_prefixes
from appt.backbones.base import Backbone, BackboneSpec
from appt.errors import ConfigError

# Prefixes of the official checkpoints: DataParallel, the runner's wrapper, Point-MAE's
# pretraining encoder, Point-BERT's MoCo query encoder.
CHECKPOINT_PREFIXES = ("module.", "base_model.", "MAE_encoder.", "transformer_q.")
DEFAULTS = {"depth": 12, "width": 384, "heads": 6, "mlp_ratio": 4.0, "seed": 0}


class TransformerEncoder(nn.Module):
    """The block stack, wrapped as in Point-MAE so its weights are named ``blocks.blocks.N.*``."""

    def __init__(self, width: int, depth: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        # timm's Block has exactly Point-MAE's parameter names and math (pre-LN, GELU MLP).
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio=mlp_ratio, qkv_bias=False) for _ in range(depth))


class PointTransformerEncoder(nn.Module):
    """The official module layout; ``state_dict()`` keys equal the stripped checkpoint keys."""

    def __init__(self, width: int, depth: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, width))
        self.blocks = TransformerEncoder(width, depth, heads, mlp_ratio)
        self.norm = nn.LayerNorm(width)
        nn.init.trunc_normal_(self.cls_token, std=0.02)  # as Point-MAE's fine-tuning model
        nn.init.trunc_normal_(self.cls_pos, std=0.02)
        self.apply(_init_weights)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _infer_dims(state: dict[str, Tensor]) -> dict[str, Any]:
    """Depth and width of a stripped checkpoint, so a 768-wide or 6-deep file needs no options."""
    idx = {int(k.split(".")[2]) for k in state if k.startswith("blocks.blocks.") and k.split(".")[2].isdigit()}
    dims: dict[str, Any] = {}
    if idx:
        dims["depth"] = max(idx) + 1
    if "norm.weight" in state:
        dims["width"] = int(state["norm.weight"].shape[0])
        dims["heads"] = max(1, dims["width"] // 64)
    return dims


class PointMAEBackbone(Backbone):
    """Frozen Point-MAE/Point-BERT encoder.

    ``spec.checkpoint``: an official ``pretrain.pth`` (Point-MAE, Point-BERT) or a raw state dict;
    without it (or with ``pretrained=False``) the weights are a seeded random init.
    ``spec.options``: ``depth`` (12), ``width`` (384), ``heads`` (6, or width/64 when read from a
    checkpoint), ``mlp_ratio`` (4.0), ``seed`` (0). ``cls_token`` = ``cls_token + cls_pos``; a
    Point-MAE pretraining file has neither, so they keep their seeded init (logged).
    """

    def __init__(self, spec: BackboneSpec) -> None:
        super().__init__()
        self.spec = spec
        check_options("point_mae", spec.options, DEFAULTS)
        state = None
        if spec.checkpoint and spec.pretrained:
            state = strip_prefixes(read_state_dict(spec.checkpoint), CHECKPOINT_PREFIXES)
        elif spec.pretrained:
            logger.warning("point_mae: no checkpoint given, using randomly initialised weights")
        opts = {**DEFAULTS, **(_infer_dims(state) if state else {}), **spec.options}
        width, heads = int(opts["width"]), int(opts["heads"])
        if width % heads:
            raise ConfigError(f"point_mae: width {width} is not divisible by heads {heads}")
        with seeded(opts["seed"]):
            encoder = PointTransformerEncoder(width, int(opts["depth"]), heads, float(opts["mlp_ratio"]))
        if state is not None:
            load_checked(encoder, state, Path(spec.checkpoint), required=lambda k: k.startswith("blocks."))
        # Keep only what APPT drives, each tensor under one name (no aliases in state dicts).
        self.width = width
        self.blocks = encoder.blocks.blocks
        self.final_norm = encoder.norm
        self.cls_token = nn.Parameter((encoder.cls_token + encoder.cls_pos).detach().clone())
