"""Shared machinery of the Hugging Face vision, video and audio adapters (``hf_vision``,
``hf_video``, ``hf_audio``): offline loading of a model folder or cached hub id, and the common
``Backbone`` built from an encoder's layers.

Why one helper: the three families differ only in which parts of the model they keep (which
layers, which class token, which input and final LayerNorm); loading, freezing, dropout and the
checks on missing weights are the same. Nothing here is ever downloaded: a name that is neither a
local folder nor in the local Hugging Face cache is a one-line ``ConfigError``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from appt.backbones._loading import check_options, seeded
from appt.backbones.base import Backbone, BackboneSpec
from appt.errors import CheckpointError, ConfigError

KNOWN_OPTIONS = {"seed"}


class HFBlock(nn.Module):
    """One Hugging Face encoder layer as a ``(B, T, D) -> (B, T, D)`` map with full attention.

    No attention mask is passed (every token attends to every other; ``None`` where the layer's
    signature takes one); a tuple output (transformers 4.x) is reduced to its hidden states.
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer
        self._mask_arg = "attention_mask" in inspect.signature(layer.forward).parameters

    def forward(self, x: Tensor) -> Tensor:
        out = self.layer(x, attention_mask=None) if self._mask_arg else self.layer(x)
        return out[0] if isinstance(out, tuple) else out


@dataclass
class EncoderParts:
    """What an adapter keeps of a Hugging Face model (everything else is dropped).

    ``cls_token``/``bare_cls_token``: ``(1, 1, D)`` with / without the family's position slot, or
    ``None``; ``input_norm``: applied by ``prepare_tokens``; ``sources``: the model's tensors the
    class token was computed from (their absence from a checkpoint is an error, as for the blocks).
    """

    width: int
    layers: Iterable[nn.Module]
    final_norm: nn.Module = field(default_factory=nn.Identity)
    input_norm: nn.Module = field(default_factory=nn.Identity)
    cls_token: Tensor | None = None
    bare_cls_token: Tensor | None = None
    sources: tuple[Tensor, ...] = ()


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's stack of transformer layers, wherever its transformers version keeps it
    (``model.layers`` in 5.x ViT/DeiT/AST, ``model.encoder.layer`` or ``.layers`` elsewhere)."""
    for owner, name in ((model, "layers"), (getattr(model, "encoder", None), "layer"),
                        (getattr(model, "encoder", None), "layers")):
        layers = getattr(owner, name, None)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise ConfigError(f"{type(model).__name__}: no encoder layer stack found (unsupported transformers version)")


def _no_dropout(config: Any) -> None:
    """Frozen blocks must compute the same in train and eval mode: every dropout and drop-path to 0."""
    for key, value in config.to_dict().items():
        if isinstance(value, float) and ("dropout" in key or key in {"drop_path_rate", "layerdrop"}):
            setattr(config, key, 0.0)


def load_config(family: str, spec: BackboneSpec, known: Iterable[str], refused: Mapping[str, str]) -> Any:
    """The model's config from a local folder or the local HF cache; unknown types refused by name."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(spec.name, local_files_only=True)
    except OSError as exc:
        raise ConfigError(f"{family}: '{spec.name}' is not a local model directory or in the local HF cache") from exc
    except ValueError as exc:  # a config.json this transformers version cannot read (e.g. an unknown model type)
        raise ConfigError(f"{family}:{spec.name}: unreadable config ({exc})".splitlines()[0]) from exc
    kind = config.model_type
    if kind in refused:
        raise ConfigError(f"{family}:{spec.name}: model type '{kind}' refused: {refused[kind]}")
    if kind not in known:
        raise ConfigError(f"{family}:{spec.name}: model type '{kind}' unsupported; known: {sorted(known)}")
    return config


def load_model(family: str, spec: BackboneSpec, config: Any) -> nn.Module:
    """The Hugging Face model for ``config`` (float32, dropout off): seeded random weights for
    ``pretrained=False``, else the weights of ``spec.name`` (local files only)."""
    from transformers import AutoModel

    _no_dropout(config)
    if not spec.pretrained:
        with seeded(spec.options.get("seed", 0)):
            return AutoModel.from_config(config).float()
    try:
        model, info = AutoModel.from_pretrained(
            spec.name, config=config, local_files_only=True, dtype=torch.float32, output_loading_info=True
        )
    except OSError as exc:
        raise CheckpointError(f"{family}:{spec.name}: no readable weights ({exc})".splitlines()[0]) from exc
    model.missing_weights = list(info.get("missing_keys", []))  # checked once the adapter knows what it uses
    return model


def _check_missing(family: str, spec: BackboneSpec, model: nn.Module, used: set[int]) -> None:
    """Refuse weights that lack a tensor the adapter drives (a missing pooler or head is fine)."""
    needed = {n for n, p in model.named_parameters() if id(p) in used}
    missing = [k for k in getattr(model, "missing_weights", []) if any(k == n or k.endswith("." + n) for n in needed)]
    if missing:
        raise CheckpointError(f"{family}:{spec.name}: weights lack {len(missing)} tensors it uses, e.g. {missing[:3]}")


class HFEncoderBackbone(Backbone):
    """A frozen Hugging Face encoder seen as blocks on ``(B, T, D)``; subclasses pick the parts.

    Subclasses implement ``family`` and ``parts(model, config) -> EncoderParts``; ``options.seed``
    (0) seeds ``pretrained=False``. ``class_token(with_position=False)`` gives the bare token.
    """

    family: str = ""
    known: frozenset[str] = frozenset()
    refused: Mapping[str, str] = {}

    def __init__(self, spec: BackboneSpec) -> None:
        super().__init__()
        self.spec = spec
        check_options(self.family, spec.options, KNOWN_OPTIONS)
        config = load_config(self.family, spec, self.known, self.refused)
        model = load_model(self.family, spec, self.sub_config(config))
        parts = self.parts(model, model.config)
        self.width = int(parts.width)
        self.blocks = nn.ModuleList(HFBlock(layer) for layer in parts.layers)
        self.final_norm = parts.final_norm
        self.input_norm = parts.input_norm
        used = {id(p) for p in self.parameters()} | {id(t) for t in parts.sources}
        _check_missing(self.family, spec, model, used)
        cls = parts.cls_token
        self.cls_token = None if cls is None else nn.Parameter(cls.detach().clone().reshape(1, 1, self.width))
        if parts.bare_cls_token is not None:
            bare = parts.bare_cls_token.detach().clone().reshape(1, 1, self.width)
            self.register_buffer("bare_cls_token", bare, persistent=False)

    def sub_config(self, config: Any) -> Any:
        """The config of the tower to load (composite models: their vision/audio tower)."""
        return config

    def parts(self, model: nn.Module, config: Any) -> EncoderParts:  # pragma: no cover - abstract
        raise NotImplementedError

    def prepare_tokens(self, x: Tensor) -> Tensor:
        """``(B, T, D) -> (B, T, D)``: the norm the first block expects its input to have had."""
        return self.input_norm(x)

