"""Hugging Face VideoMAE encoder layers as a frozen APPT backbone (``hf_video``).

VideoMAE (``MCG-NJU/videomae-base``) is a pre-LN ViT over space-time "tubelet" tokens, the video
transformer Any2Point adapts. Point tokens enter its encoder layers directly, bypassing the
tubelet embedding and its fixed sine-cosine position table (APPT's position feature gives each
point token its place in 3-D instead), with no attention mask. VideoMAE has no class token.
``final_norm`` is the encoder's ``layernorm`` when the checkpoint has one (``use_mean_pooling:
false``); the pretrained and Kinetics checkpoints use mean pooling instead, whose ``fc_norm``
belongs to the classifier, so ``final_norm`` is the identity there (APPT's readout brings its own
LayerNorm). Names: a local folder or a hub id in the local Hugging Face cache; never downloaded.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from appt.backbones._hf_encoder import EncoderParts, HFEncoderBackbone, encoder_layers


class HFVideoBackbone(HFEncoderBackbone):
    """Frozen VideoMAE encoder layers on ``(B, T, D)`` token sequences; no class token.

    ``spec.options.seed`` (0) seeds ``pretrained=False``.
    """

    family = "hf_video"
    known = frozenset({"videomae"})
    refused = {
        "timesformer": "its divided space-time attention needs tokens on a frames x patches grid",
        "vivit": "its tubelet position table is added inside the embedding; use videomae",
    }

    def parts(self, model: nn.Module, config: Any) -> EncoderParts:
        final = model.layernorm if model.layernorm is not None else nn.Identity()
        return EncoderParts(int(config.hidden_size), encoder_layers(model), final_norm=final)
