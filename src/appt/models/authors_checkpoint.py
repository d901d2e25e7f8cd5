"""Weights saved by the authors' APPT code (GitHub ``wish254/APPT``) -> appt's paper preset.

Their classification model (``APF`` with the ``Point_PN_scan`` / ``Point_PN_mn40`` encoder) keeps
its trained tensors under ``encoder_large.EncP.*`` (1x1 convolutions + BatchNorm), ``conv_block.*``
(position mixing), ``pos_embed`` (the position table), ``enc_norm.*`` (readout norm) and
``head.*`` (an ``nn.Sequential``: linear, BN, ReLU, dropout per hidden layer). Its frozen tensors
are the ViT's ``blocks.*`` and ``cls_token``; ``cls_pos`` is created but never used.

Two of their layers are laid out differently here: a 1x1 convolution is a linear layer (its
kernel axes dropped), and their ``linear1`` on ``[neighbour, centre]`` features is appt's
``neighbour_proj`` + ``centre_proj`` (the first and second halves of its input columns). The
conversion refuses, with one line naming the key, a state dict with a missing or unexpected
trained tensor, a wrong shape, or frozen tensors that differ from the backbone the config names.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import Tensor

from appt.errors import CheckpointError
from appt.models.base import APPTModel
from appt.models.io import trained_state_dict

ENCODER = "encoder_large.EncP."
UNUSED = ("cls_pos",)  # created by their model, never read in its forward pass
FROZEN_TOLERANCE = 1e-6
# Options whose value changes what the same tensors compute: their model has exactly these.
AUTHORS_OPTIONS = {
    "variant": "appt",
    "geometry_layout": "blocks",
    "biases_before_norms": True,
    "position_mixing": True,
    "position_table": True,
    "class_token_position": False,
    "readout_pool": "sum",
    "raw_last_prompt": True,
    "readout_depths": (),
    "prompt_blocks": None,
    "block_norm_eps": 1e-5,
}
BN_FIELDS = r"(weight|bias|running_mean|running_var|num_batches_tracked)"

# (appt name pattern, their name template, how their tensor becomes ours). Conv kernels are
# reshaped to the linear weight's shape; the shape check before it insists on the kernel axes.
RULES: list[tuple[str, str, str]] = [
    (r"embedding\.raw\.linear\.weight", ENCODER + "raw_point_embed.net.0.weight", "conv1d"),
    (rf"embedding\.raw\.bn\.{BN_FIELDS}", ENCODER + r"raw_point_embed.net.1.\1", "same"),
    (r"embedding\.stages\.(\d+)\.neighbour_proj\.weight", ENCODER + r"LGA_list.\1.linear1.net.0.weight", "first_half"),
    (r"embedding\.stages\.(\d+)\.centre_proj\.weight", ENCODER + r"LGA_list.\1.linear1.net.0.weight", "second_half"),
    (rf"embedding\.stages\.(\d+)\.bn\.{BN_FIELDS}", ENCODER + r"LGA_list.\1.linear1.net.1.\2", "same"),
    (r"embedding\.stages\.(\d+)\.blocks\.(\d+)\.inner\.linear\.(weight|bias)",
     ENCODER + r"LGA_list.\1.linear2.\2.net1.0.\3", "conv2d"),
    (rf"embedding\.stages\.(\d+)\.blocks\.(\d+)\.inner\.bn\.{BN_FIELDS}", ENCODER + r"LGA_list.\1.linear2.\2.net1.1.\3", "same"),
    (r"embedding\.stages\.(\d+)\.blocks\.(\d+)\.outer\.linear\.(weight|bias)",
     ENCODER + r"LGA_list.\1.linear2.\2.net2.0.\3", "conv2d"),
    (rf"embedding\.stages\.(\d+)\.blocks\.(\d+)\.outer\.bn\.{BN_FIELDS}", ENCODER + r"LGA_list.\1.linear2.\2.net2.1.\3", "same"),
    (r"position\.mix\.weight", "conv_block.weight", "mix"),
    (r"position\.mix\.bias", "conv_block.bias", "same"),
    (r"table\.table", "pos_embed", "same"),
    (r"norm\.(weight|bias)", r"enc_norm.\1", "same"),
]


def _head_rule(name: str, num_hidden: int) -> tuple[str, str] | None:
    """Their ``head`` Sequential index for appt's ``head.mlp.*`` name: hidden layer ``i`` is
    ``Linear`` at ``4i`` and BN at ``4i + 1`` there (``2i``, with ``.linear`` / ``.bn``, here)."""
    m = re.fullmatch(r"head\.mlp\.(\d+)\.(?:(linear|bn)\.)?(\w+)", name)
    if m is None or int(m.group(1)) % 2:
        return None
    layer = int(m.group(1)) // 2
    if layer == num_hidden and m.group(2) is None:
        return f"head.{4 * layer}.{m.group(3)}", "same"
    if layer < num_hidden and m.group(2):
        return f"head.{4 * layer + (m.group(2) == 'bn')}.{m.group(3)}", "same"
    return None


def their_name(name: str, num_hidden: int) -> tuple[str, str]:
    """``(their key, layout change)`` for one of appt's trained tensor names."""
    for pattern, template, change in RULES:
        m = re.fullmatch(pattern, name)
        if m is not None:
            return m.expand(template), change
    found = _head_rule(name, num_hidden) if name.startswith("head.") else None
    if found is None:
        raise CheckpointError(f"{name}: appt tensor with no counterpart in the authors' model (use the paper preset)")
    return found


def _expected_shape(ours: tuple[int, ...], change: str) -> tuple[int, ...]:
    """The shape their tensor must have to give ``ours`` under ``change``."""
    if change == "conv1d":
        return (*ours, 1)
    if change == "conv2d":
        return (*ours, 1, 1) if len(ours) == 2 else ours
    if change in ("first_half", "second_half"):
        return (ours[0], 2 * ours[1], 1)
    if change == "mix":
        return ours[:3]
    return ours


def _to_ours(tensor: Tensor, change: str, shape: tuple[int, ...]) -> Tensor:
    if change == "first_half":
        return tensor[:, : shape[1], 0]
    if change == "second_half":
        return tensor[:, shape[1] :, 0]
    return tensor.reshape(shape)


def check_authors_options(model: APPTModel) -> None:
    """Refuse a model config whose options give the authors' tensors another meaning."""
    for key, value in AUTHORS_OPTIONS.items():
        if getattr(model.config, key) != value:
            raise CheckpointError(
                f"model.{key}={getattr(model.config, key)!r}: the authors' model has {value!r} (use the paper preset)"
            )


def convert_authors_state(state: dict[str, Tensor], model: APPTModel) -> dict[str, Tensor]:
    """Their state dict -> appt's trained tensors for ``model`` (the paper preset), all checked.

    Every trained appt tensor must come from exactly one of theirs with the right shape; every
    tensor of theirs must be used, checked equal to the frozen backbone (``blocks.*``,
    ``cls_token``, within ``FROZEN_TOLERANCE``) or be the unused ``cls_pos``.
    """
    check_authors_options(model)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    num_hidden = len(model.config.head_hidden)
    used: set[str] = set()
    out: dict[str, Tensor] = {}
    for name, mine in trained_state_dict(model).items():
        key, change = their_name(name, num_hidden)
        if key not in state:
            raise CheckpointError(f"{key}: missing from the authors' state dict (appt's {name})")
        tensor = state[key]
        expected = _expected_shape(tuple(mine.shape), change)
        if tuple(tensor.shape) != expected:
            raise CheckpointError(f"{key}: shape {tuple(tensor.shape)}, the config needs {expected} (appt's {name})")
        out[name] = _to_ours(tensor, change, tuple(mine.shape)).to(mine.dtype).clone()
        used.add(key)
    used |= _check_frozen(state, model)
    unexpected = sorted(set(state) - used - set(UNUSED))
    if unexpected:
        raise CheckpointError(f"{unexpected[0]}: unexpected tensor in the authors' state dict ({len(unexpected)} in all)")
    return out


def _check_frozen(state: dict[str, Tensor], model: APPTModel) -> set[str]:
    """Compare their ``blocks.*`` and ``cls_token`` with the backbone; the keys checked."""
    backbone = model.backbone
    frozen = {f"blocks.{k}": v for k, v in backbone.blocks.state_dict().items()}
    cls = backbone.class_token(with_position=False)
    if cls is not None:
        frozen["cls_token"] = cls
    for key, mine in frozen.items():
        if key not in state:
            raise CheckpointError(f"{key}: missing from the authors' state dict (a frozen backbone tensor)")
        theirs = state[key]
        if tuple(theirs.shape) != tuple(mine.shape):
            raise CheckpointError(f"{key}: shape {tuple(theirs.shape)}, the backbone has {tuple(mine.shape)}")
        diff = (theirs.double() - mine.detach().double().cpu()).abs().max().item() if mine.numel() else 0.0
        if diff > FROZEN_TOLERANCE:
            raise CheckpointError(
                f"{key}: differs from the backbone {model.config.backbone.identity()} by up to {diff:.3g} "
                f"(more than {FROZEN_TOLERANCE:g}): these weights were trained on another backbone"
            )
    return set(frozen)


def read_authors_checkpoint(path: str | os.PathLike) -> dict[str, Tensor]:
    """Tensors of a checkpoint their scripts saved: ``{"net": state_dict, ...}`` (classification),
    ``{"model": state_dict, ...}`` (segmentation) or a bare state dict; read without unpickling
    anything but tensors and plain containers."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        obj: object = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or truncated files
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})".splitlines()[0]) from exc
    for wrapper in ("net", "model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state dict of the authors' model (expected a dict of tensors under 'net')")
    return {str(k): v for k, v in obj.items()}


def load_authors_checkpoint(model: APPTModel, path: str | os.PathLike) -> None:
    """Read ``path`` (saved by the authors' code) into ``model`` (built from the paper preset)."""
    tensors = convert_authors_state(read_authors_checkpoint(path), model)
    model.load_state_dict(tensors, strict=False)


__all__ = ["convert_authors_state", "load_authors_checkpoint", "read_authors_checkpoint"]
