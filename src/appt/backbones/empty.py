"""The ``none`` backbone: zero blocks, for the encoder-only baseline (point embedding + head)."""

from __future__ import annotations

from torch import nn

from appt.backbones._loading import check_options
from appt.backbones.base import Backbone, BackboneSpec


class EmptyBackbone(Backbone):
    """No transformer at all; ``spec.options["width"]`` (384) sets the token width D."""

    def __init__(self, spec: BackboneSpec) -> None:
        super().__init__()
        self.spec = spec
        check_options("none", spec.options, {"width"})
        self.width = int(spec.options.get("width", 384))
        self.blocks = nn.ModuleList()
        self.cls_token = None
        self.final_norm = nn.Identity()
