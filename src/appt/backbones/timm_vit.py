"""timm Vision Transformers (ViT-B/16, DINOv2, ...) as frozen APPT backbones.

Only the parts APPT drives are kept: the block stack, the final norm, ``norm_pre`` (identity for
most ViTs, a LayerNorm for CLIP-style ones) and the class token. The patch embedding and head
are dropped. DINOv2 register tokens are not exposed (the protocol has one class token); layer
scale lives inside the blocks and needs nothing here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import huggingface_hub.constants
import timm
from torch import Tensor, nn

from appt.backbones._loading import check_options, load_checked, read_state_dict, seeded, strip_prefixes
from appt.backbones.base import Backbone, BackboneSpec
from appt.errors import CheckpointError, ConfigError

KNOWN_OPTIONS = {"seed"}


def _create(spec: BackboneSpec) -> nn.Module:
    """Build the timm model; downloads only for ``pretrained=True`` without a local checkpoint."""
    from_hub = spec.pretrained and not spec.checkpoint
    if from_hub and huggingface_hub.constants.HF_HUB_OFFLINE:
        # Offline, only the HF cache may serve weights; timm falls back to plain URLs for weights
        # that have no hub copy, which HF_HUB_OFFLINE does not stop.
        cfg = timm.models.get_pretrained_cfg(spec.name)
        if cfg is not None and not cfg.hf_hub_id:
            raise CheckpointError(f"timm_vit:{spec.name}: its weights live at a URL, not the HF cache, and "
                                  "HF_HUB_OFFLINE is set (set model.backbone.checkpoint=FILE)")
    try:
        with seeded(spec.options.get("seed", 0)):
            return timm.create_model(spec.name, pretrained=from_hub, num_classes=0)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise ConfigError(f"timm_vit: unknown timm model '{spec.name}' (see timm.list_models('vit*'))") from exc
        raise
    except OSError as exc:  # huggingface_hub's LocalEntryNotFoundError and other missing-file errors
        raise CheckpointError(
            f"timm_vit:{spec.name}: pretrained weights are not in the local cache and cannot be downloaded "
            "(set model.backbone.checkpoint=FILE, or pretrained=false for random weights)"
        ) from exc


def _read_checkpoint(path: Path) -> dict[str, Tensor]:
    """A local weights file as a timm-layout state dict without the classifier (``head.*``)."""
    state = strip_prefixes(read_state_dict(path), ("module.",))
    return {k: v for k, v in state.items() if not k.startswith("head.")}


def _load_checkpoint(model: nn.Module, state: dict[str, Tensor], path: Path) -> None:
    """Load ``state``; the model's own filter converts other ViT layouts (JAX, DINOv2, pos_embed size)."""
    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state = filter_fn(state, model)
    used = ("blocks.", "norm.", "norm_pre.", "cls_token", "pos_embed")
    load_checked(model, state, path, required=lambda k: k.startswith(used))


class TimmViTBackbone(Backbone):
    """Frozen timm ViT by model name (``vit_base_patch16_224``, ``vit_small_patch14_dinov2``...).

    ``spec.checkpoint``: a local ``.pth``/``.bin``/``.safetensors`` state dict in timm layout
    (``head.*`` ignored). ``pretrained=True`` without a checkpoint uses timm's own pretrained
    loading (the Hugging Face cache); ``pretrained=False`` never downloads. ``cls_token`` =
    ``model.cls_token`` plus the class slot of ``pos_embed`` when the model has one;
    ``class_token(with_position=False)`` gives the bare ``model.cls_token`` (a frozen buffer).
    """

    def __init__(self, spec: BackboneSpec) -> None:
        super().__init__()
        self.spec = spec
        check_options("timm_vit", spec.options, KNOWN_OPTIONS)
        path = Path(spec.checkpoint) if spec.pretrained and spec.checkpoint else None
        state = _read_checkpoint(path) if path else None  # a bad file fails before the model is built
        model = _create(spec)
        if not isinstance(getattr(model, "blocks", None), nn.Sequential | nn.ModuleList) or not hasattr(model, "norm"):
            raise ConfigError(f"timm_vit: '{spec.name}' is not a plain ViT (needs .blocks and .norm)")
        if state is not None:
            _load_checkpoint(model, state, path)
        self.width = int(model.embed_dim)
        self.blocks = nn.ModuleList(model.blocks)
        self.final_norm = model.norm
        self.norm_pre = getattr(model, "norm_pre", nn.Identity())
        self.cls_token = _class_token(model)
        if self.cls_token is not None:  # the bare token, for models that bring their own class slot
            self.register_buffer("bare_cls_token", model.cls_token.detach().clone(), persistent=False)

    def prepare_tokens(self, x: Tensor) -> Tensor:
        """``(B, T, D) -> (B, T, D)``: the ViT's pre-norm (identity for most ViTs)."""
        return self.norm_pre(x)


def _class_token(model: nn.Module) -> nn.Parameter | None:
    cls = getattr(model, "cls_token", None)
    if cls is None:
        return None
    pos = getattr(model, "pos_embed", None)
    if pos is not None and not getattr(model, "no_embed_class", False):
        cls = cls + pos[:, :1]  # the class slot of the position table
    return nn.Parameter(cls.detach().clone())
