"""Shared helpers of the backbone adapters: seeded random init and checked weight loading.

A random-weight backbone must be the same network every time it is built from the same spec,
because APPT checkpoints store only the trainable tensors and rebuild the frozen backbone from
the spec; ``seeded`` makes that so. Weight files are read without unpickling arbitrary objects.
"""

from __future__ import annotations

import logging
import pickle
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from appt.errors import CheckpointError, ConfigError

logger = logging.getLogger("appt.backbones")

# Dicts that training scripts commonly wrap a state dict in, most specific first.
CONTAINER_KEYS = ("base_model", "model", "state_dict", "module")


def check_options(family: str, options: Mapping[str, object], known: Iterable[str]) -> None:
    """Refuse option keys an adapter does not read, so a typo in a config never passes silently."""
    unknown = set(options) - set(known)
    if unknown:
        raise ConfigError(f"{family}: unknown options {sorted(unknown)}; known: {sorted(known)}")


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block under a fixed torch CPU seed without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a weights file (``.safetensors`` or a torch pickle) into a flat ``{name: tensor}`` dict.

    Torch files are read with ``weights_only=True``: a file holding arbitrary pickled objects is
    refused instead of executed. A dict wrapping the weights (``{"base_model": {...}}``,
    ``{"model": ...}``, ``{"state_dict": ...}``) is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path), device="cpu")
        else:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):  # garbage bytes, not a refused pickled object
            raise CheckpointError(f"{path}: unreadable checkpoint (not a torch or safetensors weights file)") from exc
        raise CheckpointError(
            f"{path}: refused to load, it pickles objects other than tensors (read with weights_only=True)"
        ) from exc
    except Exception as exc:  # torch/safetensors raise many types for truncated or foreign files
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})".splitlines()[0]) from exc
    return _unwrap(obj, path)


def _unwrap(obj: object, path: Path) -> dict[str, Tensor]:
    # Unwrap containers such as {"base_model": {...}, "optimizer": ..., "epoch": 300} until tensors appear.
    while isinstance(obj, Mapping) and not any(isinstance(v, Tensor) for v in obj.values()):
        inner = next((obj[k] for k in CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: no tensors found (top-level keys: {preview(obj.keys())})")
    return tensors


def strip_prefixes(state: Mapping[str, Tensor], prefixes: Iterable[str]) -> dict[str, Tensor]:
    """Remove any of ``prefixes`` from the start of each key, repeatedly (``module.base_model.x`` -> ``x``)."""
    prefixes = tuple(prefixes)
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in prefixes:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix) :], True
        out.setdefault(key, value)
    return out


def preview(keys: Iterable[object], n: int = 6) -> str:
    """``a, b, c ... (+12 more)`` for error messages."""
    keys = [str(k) for k in keys]
    head = ", ".join(keys[:n])
    return head + (f" ... (+{len(keys) - n} more)" if len(keys) > n else "")


def _group(keys: Iterable[str]) -> str:
    counts = Counter(k.split(".")[0] + (".*" if "." in k else "") for k in keys)
    return ", ".join(f"{name} ({n})" for name, n in sorted(counts.items()))


def load_checked(
    module: nn.Module,
    state: Mapping[str, Tensor],
    path: str | Path,
    required: Callable[[str], bool],
) -> None:
    """Load ``state`` into ``module``; fail clearly on anything the backbone needs.

    Raises ``CheckpointError`` when no ``blocks.*`` weight matched at all (wrong file or layout),
    when a tensor has the wrong shape, or when a key for which ``required(key)`` is true is
    missing. Other missing keys and keys the module does not have are logged as warnings.
    """
    own = module.state_dict()
    matched = [k for k in own if k in state]
    if not any(k.startswith("blocks.") for k in matched):
        raise CheckpointError(
            f"{path}: no transformer block weights found for this backbone "
            f"(expected keys like {preview([k for k in own if k.startswith('blocks.')], 2)}; "
            f"checkpoint keys look like {preview(state.keys(), 4)})"
        )
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in matched if state[k].shape != own[k].shape]
    if wrong:
        raise CheckpointError(f"{path}: tensor shapes do not match the backbone: {preview(wrong, 3)}")
    missing = [k for k in own if k not in state]
    needed = [k for k in missing if required(k)]
    if needed:
        raise CheckpointError(f"{path}: checkpoint lacks {len(needed)} required weights: {preview(needed)}")
    module.load_state_dict({k: state[k] for k in matched}, strict=False)
    if missing:
        logger.warning("%s: %d weights not in checkpoint, kept at seed init: %s", path, len(missing), preview(missing))
    unused = [k for k in state if k not in own]
    if unused:
        logger.warning("%s: ignored %d checkpoint keys the backbone lacks: %s", path, len(unused), _group(unused))
