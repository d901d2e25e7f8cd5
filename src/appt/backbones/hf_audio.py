"""Hugging Face audio transformers (AST, wav2vec 2.0, HuBERT) as frozen APPT backbones (``hf_audio``).

  - AST (Audio Spectrogram Transformer, ``MIT/ast-finetuned-audioset-10-10-0.4593``) is a DeiT-type
    pre-LN ViT over spectrogram patches: ``cls_token`` is its class token plus position slot 0 (the
    distillation token is dropped), ``final_norm`` its ``layernorm``.
  - wav2vec 2.0 / HuBERT (``facebook/wav2vec2-base``, ``facebook/hubert-base-ls960``): only the
    transformer encoder layers are kept. Their convolutional feature extractor (waveform -> frames)
    and feature projection are skipped because APPT supplies the tokens; their *positional
    convolution* (a wide grouped convolution over neighbouring frames, the models' only position
    signal, added before the first layer) is skipped too: it mixes tokens by their order in time,
    which point tokens do not have. APPT's position feature (the embedded 3-D centre of each point
    group) replaces it. No class token.
    The base models are post-LN (``do_stable_layer_norm: false``): the encoder LayerNorm the
    first layer expects is applied by ``prepare_tokens``, ``final_norm`` is the identity. The
    large "stable layer norm" models are pre-LN: ``prepare_tokens`` is the identity and the
    encoder LayerNorm is ``final_norm``.
Names: a local folder or a hub id in the local Hugging Face cache; never downloaded.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from appt.backbones._hf_encoder import EncoderParts, HFEncoderBackbone, encoder_layers

AST_TYPE = "audio-spectrogram-transformer"
SPEECH_TYPES = {"wav2vec2", "hubert"}


class HFAudioBackbone(HFEncoderBackbone):
    """Frozen encoder layers of a Hugging Face audio model on ``(B, T, D)`` token sequences.

    ``spec.options.seed`` (0) seeds ``pretrained=False``. ``cls_token``: AST's, ``None`` otherwise.
    """

    family = "hf_audio"
    known = frozenset({AST_TYPE} | SPEECH_TYPES)
    refused = {
        "wav2vec2-conformer": "its attention uses rotary or relative positions over the frame order "
        "and convolution modules across neighbouring frames, which point tokens do not have",
        "whisper": "it is an encoder-decoder whose encoder expects a fixed 1500-frame position table",
    }

    def parts(self, model: nn.Module, config: Any) -> EncoderParts:
        width = int(config.hidden_size)
        if config.model_type == AST_TYPE:
            emb = model.embeddings
            pos = emb.position_embeddings  # (1, 2 + patches, D): class, distillation, patches
            return EncoderParts(
                width, encoder_layers(model), final_norm=model.layernorm,
                cls_token=emb.cls_token + pos[:, :1], bare_cls_token=emb.cls_token, sources=(emb.cls_token, pos),
            )
        encoder = model.encoder
        if config.do_stable_layer_norm:  # pre-LN: the encoder norm closes the stack
            return EncoderParts(width, encoder_layers(model), final_norm=encoder.layer_norm)
        return EncoderParts(width, encoder_layers(model), input_norm=encoder.layer_norm)  # post-LN, like BERT
