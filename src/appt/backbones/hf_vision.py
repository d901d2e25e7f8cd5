"""Hugging Face image encoders (DINOv2, CLIP vision, SigLIP vision, ViT, DeiT) as frozen APPT backbones.

timm loads these architectures from timm checkpoints only; users who hold the Hugging Face
folders (``facebook/dinov2-base``, ``openai/clip-vit-base-patch16``...) drive them here. All are
pre-LN ViTs: point tokens enter the encoder layers directly, bypassing the patch embedding and
its position table, with no attention mask. What each family keeps:

  ========================  ===============================  ==============  ===================
  model type                class token (``cls_token``)      prepare_tokens  final_norm
  ========================  ===============================  ==============  ===================
  dinov2                    ``cls_token`` + position slot 0  identity        ``layernorm``
  dinov2_with_registers     same (register tokens dropped)   identity        ``layernorm``
  vit                       ``cls_token`` + position slot 0  identity        ``layernorm``
  deit                      ``cls_token`` + position slot 0  identity        ``layernorm``
                            (distillation token dropped)
  clip / clip_vision_model  ``class_embedding`` + slot 0     ``pre_layrnorm``  ``post_layernorm``
  siglip / siglip_vision_…  none (SigLIP has no class token) identity        ``post_layernorm``
  ========================  ===============================  ==============  ===================

CLIP's ``post_layernorm`` normalises only the pooled class token in Hugging Face; here it is the
final norm of every token (APPT pools the tokens itself). A full CLIP/SigLIP checkpoint (text +
vision) loads its vision tower. DINOv2's layer scale lives inside its layers and needs nothing
here. Names: a local folder or a hub id in the local Hugging Face cache; never downloaded.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from appt.backbones._hf_encoder import EncoderParts, HFEncoderBackbone, encoder_layers

VIT_TYPES = {"vit", "deit", "dinov2", "dinov2_with_registers"}
CLIP_TYPES = {"clip", "clip_vision_model"}
SIGLIP_TYPES = {"siglip", "siglip_vision_model"}
REFUSED = {
    "beit": "its relative position bias is defined over a 2-D patch grid, which point tokens do not form",
    "data2vec-vision": "its relative position bias is defined over a 2-D patch grid, which point tokens do not form",
    "swin": "windowed attention needs tokens on a 2-D patch grid, which point tokens do not form",
    "siglip2": "its vision tower takes variable-resolution patch grids; use a siglip checkpoint",
}


class HFVisionBackbone(HFEncoderBackbone):
    """Frozen encoder layers of a Hugging Face image model on ``(B, T, D)`` token sequences.

    ``spec.name``: a local folder or a cached hub id; ``spec.options.seed`` (0) for
    ``pretrained=False``. ``cls_token``: ``(1, 1, D)`` with its position slot, ``None`` for SigLIP.
    """

    family = "hf_vision"
    known = frozenset(VIT_TYPES | CLIP_TYPES | SIGLIP_TYPES)
    refused = REFUSED

    def sub_config(self, config: Any) -> Any:
        return config.vision_config if config.model_type in {"clip", "siglip"} else config

    def parts(self, model: nn.Module, config: Any) -> EncoderParts:
        model = getattr(model, "vision_model", model)  # transformers 4.x nests the tower one level deeper
        emb, width = model.embeddings, int(config.hidden_size)
        kind = config.model_type
        if kind in VIT_TYPES:
            pos = emb.position_embeddings  # (1, specials + patches, D); slot 0 is the class token's
            return EncoderParts(
                width, encoder_layers(model), final_norm=model.layernorm,
                cls_token=emb.cls_token + pos[:, :1], bare_cls_token=emb.cls_token, sources=(emb.cls_token, pos),
            )
        if kind in CLIP_TYPES:
            cls, pos = emb.class_embedding, emb.position_embedding.weight
            return EncoderParts(
                width, encoder_layers(model), final_norm=model.post_layernorm, input_norm=model.pre_layrnorm,
                cls_token=cls + pos[0], bare_cls_token=cls, sources=(cls, pos),
            )
        return EncoderParts(width, encoder_layers(model), final_norm=model.post_layernorm)  # SigLIP
