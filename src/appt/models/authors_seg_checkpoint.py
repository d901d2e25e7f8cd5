"""Weights saved by the authors' segmentation code (``APF_Seg``, ``wish254/APPT``) -> ``AuthorsPartSegmentation``.

Their trained tensors: ``EncP.*`` (the encoder, named as in classification without the
``encoder_large.`` prefix), ``conv_block.*``, ``enc_norm.*``, ``propagation_0 .. 7`` (1x1
convolutions with bias + BatchNorm: ``mlp_convs.i`` / ``mlp_bns.i``), ``dgcnn_pro_1 / 2``
(``layerJ.0`` a bias-free 1x1 Conv2d, ``layerJ.1`` a GroupNorm) and ``head`` (conv, BN, dropout,
conv). Frozen: the ViT's ``blocks.*`` and ``cls_token``; ``pos_embed`` stays at zero (it never
trains there), so it must be zero. Created but never used in their forward pass: ``cls_pos``,
``prompt_pos``, ``label_conv``, ``cls_map``, ``gmp_map_list``, ``gmp_map_end``, ``decode_list``.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from torch import Tensor

from appt.errors import CheckpointError
from appt.models.authors_checkpoint import (_check_frozen, _expected_shape, _to_ours, read_authors_checkpoint,
                                            their_name)
from appt.models.io import trained_state_dict

if TYPE_CHECKING:
    from appt.models.authors_segmentation import AuthorsPartSegmentation

UNUSED_PREFIXES = ("cls_pos", "prompt_pos", "label_conv.", "cls_map.", "gmp_map_list.", "gmp_map_end.", "decode_list.")
SEG_OPTIONS = {
    "seg_model": "authors",
    "variant": "appt",
    "geometry_layout": "blocks",
    "biases_before_norms": True,
    "position_mixing": True,
    "position_table": False,
    "class_token_position": False,
    "prompt_blocks": None,
    "block_norm_eps": 1e-5,
}
BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
PROPAGATIONS = {"prop_points": "0", "prop_fine": "1", "prop_mid": "2"}
GRAPHS = {"graph_fine": "1", "graph_mid": "2"}


def _weight_change(field: str, change: str) -> str:
    """A convolution's weight loses its kernel axes here; its bias is the same tensor."""
    return change if field == "weight" else "same"


def seg_name(name: str) -> tuple[str, str] | None:
    """``(their key, layout change)`` for a decoder or head tensor of ``AuthorsPartSegmentation``."""
    m = re.fullmatch(rf"(enc_steps\.(\d+)|prop_\w+)\.mlp\.(\d)\.(?:linear\.(weight|bias)|bn\.{BN})", name)
    if m:
        index = str(3 + int(m.group(2))) if m.group(2) is not None else PROPAGATIONS[m.group(1)]
        if m.group(4):
            return f"propagation_{index}.mlp_convs.{m.group(3)}.{m.group(4)}", _weight_change(m.group(4), "conv1d")
        return f"propagation_{index}.mlp_bns.{m.group(3)}.{m.group(5)}", "same"
    m = re.fullmatch(r"(graph_\w+)\.(first|second)\.(linear|norm)\.(weight|bias)", name)
    if m:
        layer = f"dgcnn_pro_{GRAPHS[m.group(1)]}.layer{1 if m.group(2) == 'first' else 2}"
        if m.group(3) == "linear":
            return f"{layer}.0.{m.group(4)}", "conv2d"
        return f"{layer}.1.{m.group(4)}", "same"
    m = re.fullmatch(rf"head\.(first|bn|out)\.{BN}", name)
    if m:
        index = {"first": 0, "bn": 1, "out": 3}[m.group(1)]  # their Sequential: conv, BN, dropout, conv
        return f"head.{index}.{m.group(2)}", "same" if m.group(1) == "bn" else _weight_change(m.group(2), "conv1d")
    return None


def convert_authors_seg_state(state: dict[str, Tensor], model: AuthorsPartSegmentation) -> dict[str, Tensor]:
    """Their ``APF_Seg`` state dict -> ``model``'s trained tensors (``AuthorsPartSegmentation``), all checked."""
    for key, value in SEG_OPTIONS.items():
        if getattr(model.config, key) != value:
            raise CheckpointError(
                f"model.{key}={getattr(model.config, key)!r}: the authors' model has {value!r} (use the paper preset)"
            )
    state = {k.removeprefix("module."): v for k, v in state.items()}
    pos = state.get("pos_embed")
    if pos is not None and pos.abs().max().item() > 0:
        raise CheckpointError(
            "pos_embed: not zero, but their segmentation model never trains it (and appt's preset has no table)"
        )
    used = {"pos_embed"}
    out: dict[str, Tensor] = {}
    for name, mine in trained_state_dict(model).items():
        found = seg_name(name)
        key, change = found if found else their_name(name, 0)
        key = key.removeprefix("encoder_large.")  # their segmentation model keeps the encoder as EncP
        if key not in state:
            raise CheckpointError(f"{key}: missing from the authors' state dict (appt's {name})")
        tensor, expected = state[key], _expected_shape(tuple(mine.shape), change)
        if tuple(tensor.shape) != expected:
            raise CheckpointError(f"{key}: shape {tuple(tensor.shape)}, the config needs {expected} (appt's {name})")
        out[name] = _to_ours(tensor, change, tuple(mine.shape)).to(mine.dtype).clone()
        used.add(key)
    used |= _check_frozen(state, model)
    unexpected = sorted(k for k in set(state) - used if not k.startswith(UNUSED_PREFIXES))
    if unexpected:
        raise CheckpointError(f"{unexpected[0]}: unexpected tensor in the authors' state dict ({len(unexpected)} in all)")
    return out


def load_authors_seg_checkpoint(model: AuthorsPartSegmentation, path: str | os.PathLike) -> None:
    """Read ``path`` (saved by their ``run_pn_seg.py``: ``{"model": state_dict, ...}``) into ``model``."""
    model.load_state_dict(convert_authors_seg_state(read_authors_checkpoint(path), model), strict=False)


__all__ = ["convert_authors_seg_state", "load_authors_seg_checkpoint"]
