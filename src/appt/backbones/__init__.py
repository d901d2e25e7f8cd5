"""Frozen backbones by name: ``build_backbone(BackboneSpec("timm_vit", "vit_base_patch16_224"))``.

Adapters are imported on first use, so building a timm ViT never imports transformers.
"""

from __future__ import annotations

from importlib import import_module

from appt.backbones.base import Backbone, BackboneSpec
from appt.errors import ConfigError

# family -> "module:class"; one file per family.
_FAMILIES = {
    "hf_text": "appt.backbones.hf_text:HFTextBackbone",
    "hf_vision": "appt.backbones.hf_vision:HFVisionBackbone",
    "hf_video": "appt.backbones.hf_video:HFVideoBackbone",
    "hf_audio": "appt.backbones.hf_audio:HFAudioBackbone",
    "timm_vit": "appt.backbones.timm_vit:TimmViTBackbone",
    "point_mae": "appt.backbones.point_mae:PointMAEBackbone",
    "none": "appt.backbones.empty:EmptyBackbone",
}

__all__ = ["Backbone", "BackboneSpec", "available_backbones", "build_backbone"]


def available_backbones() -> list[str]:
    """The registered backbone families (values of ``BackboneSpec.family``)."""
    return sorted(_FAMILIES)


def build_backbone(spec: BackboneSpec) -> Backbone:
    """Build the backbone a spec names, frozen (no parameter requires grad) and in eval mode."""
    if spec.family not in _FAMILIES:
        raise ConfigError(f"backbone family '{spec.family}' unknown; known: {available_backbones()}")
    staged = import_module("appt.backbones.bundled").staged_backbone(spec)  # a run from an `appt bundle` folder
    if staged is not None:
        return staged
    module_name, class_name = _FAMILIES[spec.family].split(":")
    backbone: Backbone = getattr(import_module(module_name), class_name)(spec)
    return backbone.freeze().eval()
