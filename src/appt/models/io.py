"""Trained-weights-only checkpoints: a safetensors file plus a JSON config naming the backbone.

Like ``peft`` adapters, a saved APPT model holds only what training changed (everything outside
the frozen backbone, plus any backbone tensor that trains in the ``lora``/``full_finetune``
variants); the frozen backbone is rebuilt from its spec. A file made for another backbone or
variant is refused with a message saying which.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from appt.errors import CheckpointError
from appt.fileio import atomic_write

if TYPE_CHECKING:
    from appt.models.base import APPTModel

# The files of a weights folder (``RUN_DIR/checkpoints/best``): written by ``save_pretrained`` and,
# for DATA_INFO, by ``appt train`` / ``appt convert``; read by ``from_pretrained``, eval and predict.
WEIGHTS_NAME = "appt_weights.safetensors"
CONFIG_NAME = "appt_config.json"
DATA_INFO = "appt_data.json"  # class names and the test-time pipeline: what `appt predict` needs besides the weights


def trained_state_dict(model: "APPTModel") -> dict[str, Tensor]:
    """The tensors a checkpoint holds (weights folder and ``resume.pt`` alike): all outside
    ``backbone.`` (BatchNorm statistics included), and backbone tensors that train. The frozen
    backbone is rebuilt from its spec, so it is never saved."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    return {
        name: t.detach().contiguous()
        for name, t in model.state_dict().items()
        if not name.startswith("backbone.") or name in trainable
    }


def save_trained(model: "APPTModel", path: str | os.PathLike) -> Path:
    """Save ``model``'s trained weights to ``path`` (a ``.safetensors`` file, or a folder that gets
    ``appt_weights.safetensors`` + ``appt_config.json``). Returns the weights file."""
    path = Path(path)
    weights = path if path.suffix == ".safetensors" else path / WEIGHTS_NAME
    config_json = json.dumps(model.config.to_dict(), sort_keys=True)
    metadata = {
        "format": "appt",
        "task": type(model).__name__,
        "backbone": model.backbone_identity,
        "variant": model.config.variant,
        "config": config_json,
    }
    tensors = trained_state_dict(model)
    atomic_write(weights, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    if path.suffix != ".safetensors":
        text = json.dumps(model.config.to_dict(), indent=2, sort_keys=True) + "\n"
        atomic_write(path / CONFIG_NAME, lambda tmp: tmp.write_text(text))
    return weights


def resolve_weights(path: str | os.PathLike) -> Path:
    """The weights file for ``path`` (the file itself or ``path/appt_weights.safetensors``)."""
    path = Path(path)
    weights = path / WEIGHTS_NAME if path.is_dir() else path
    if not weights.is_file():
        raise CheckpointError(f"{weights}: no such weights file")
    return weights


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of an appt weights file, with a clear error for anything else."""
    weights = resolve_weights(path)
    try:

        with safe_open(str(weights), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({err})") from err
    if metadata.get("format") != "appt":
        raise CheckpointError(f"{weights}: not an appt checkpoint (no appt metadata)")
    return tensors, metadata


def read_config_dict(path: str | os.PathLike) -> dict:
    """The model config stored in an appt weights file (or its folder)."""
    weights = resolve_weights(path)
    _, metadata = read_checkpoint(weights)
    return json.loads(metadata["config"])


def load_trained(model: "APPTModel", path: str | os.PathLike) -> None:
    """Load trained weights into ``model``; refuse weights made for another backbone, variant or shape."""
    weights = resolve_weights(path)
    tensors, metadata = read_checkpoint(weights)
    if metadata.get("backbone") != model.backbone_identity:
        raise CheckpointError(
            f"{weights}: weights were trained for backbone {metadata.get('backbone')!r}, "
            f"but this model uses {model.backbone_identity!r}"
        )
    if metadata.get("variant") != model.config.variant:
        raise CheckpointError(
            f"{weights}: weights are for variant {metadata.get('variant')!r}, this model is {model.config.variant!r}"
        )
    expected = trained_state_dict(model)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{weights}: tensors do not match this model's configuration "
            f"(missing: {', '.join(missing[:5]) or 'none'}; unexpected: {', '.join(unexpected[:5]) or 'none'})"
        )
    wrong = [f"{k} {tuple(tensors[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if tensors[k].shape != v.shape]
    if wrong:
        raise CheckpointError(f"{weights}: tensor shapes differ from this model's: {'; '.join(wrong[:5])}")
    model.load_state_dict(tensors, strict=False)
