"""The run config: YAML files mapped onto typed dataclasses, with ``--set key=value`` overrides.

Why typed sections instead of a free dict: a misspelt key (``train.lrr``) must stop the run before
it starts, with a message naming the key, not be silently ignored for 300 epochs. The ``model``
section is checked against :class:`appt.models.APPTConfig` (and ``model.backbone`` against
:class:`appt.backbones.BackboneSpec`) at build time by :mod:`appt.training.builders`; here it is
kept as a dict because ``num_classes`` and ``in_channels`` come from the dataset.

Layout of a config file::

    base: [base/modelnet40.yaml]     # optional, merged first (paths relative to this file)
                                     # or appt:NAME, a base shipped in the package (appt:minilm)
    task: classification             # or part_segmentation (the tasks of appt.tasks)
    run_dir: runs/my_run             # optional; default runs/<config name>-<time>
    model: {backbone: {family: hf_text, name: minilm}, variant: appt, ...}
    data: {dataset: modelnet_points, root: ${APPT_DATA:-../shared/data}/..., ...}
    train: {epochs: 300, lr: 5.0e-4, ...}
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from appt.errors import ConfigError

PRECISIONS = ("no", "fp16", "bf16")
CHECKPOINT_MODES = ("off", "backbone", "all")  # = appt.recompute.CHECKPOINT_MODES (no torch import here)
FROZEN_DTYPES = ("auto", "fp32")  # = appt.models.frozen_dtype.FROZEN_DTYPES
SCHEDULES = ("cosine", "step")
SHIPPED_PREFIX = "appt:"  # base: [appt:minilm] names a config shipped in the package


@dataclass
class DataSection:
    """What to read and how to batch it (``build_dataset`` arguments + loader settings)."""

    dataset: str = "modelnet_points"
    root: str = "${APPT_DATA:-../shared/data}/modelnet10_pcd/ModelNet10/pcd"
    train_split: str = "train"
    test_split: str = "test"
    num_points: int = 1024
    batch_size: int = 32
    eval_batch_size: int | None = None
    val_fraction: float = 0.0
    subset: int | float | str | None = None  # seeded, per class: a count, a fraction if float, or "K/class"
    test_subset: int | float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    train_transforms: list[Any] = field(default_factory=list)
    test_transforms: list[Any] = field(default_factory=list)
    num_workers: int | None = None  # None: loader workers on CUDA (see training.loaders.resolve_workers), 0 on CPU

    @property
    def eval_batch(self) -> int:
        """The batch size of evaluation and testing: ``eval_batch_size``, else ``batch_size``."""
        return self.eval_batch_size or self.batch_size


@dataclass
class TrainSection:
    """The optimisation recipe and the run's bookkeeping (seed, precision, checkpoint cadence)."""

    epochs: int = 300
    lr: float = 5e-4
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    adam_eps: float = 1e-8
    decay_1d: bool = False  # also decay biases and norm scales (torch's AdamW over all parameters does)
    warmup_epochs: float = 0.0
    min_lr: float = 1e-6
    schedule: str = "cosine"  # cosine | step (lr * step_gamma every step_epochs); never below min_lr
    schedule_epochs: float | None = None  # cosine length after warm-up (default: to the last epoch)
    schedule_per_epoch: bool = False  # the lr changes once per epoch, not every step
    step_epochs: int = 40
    step_gamma: float = 0.5
    label_smoothing: float = 0.2
    balanced: bool = False  # classification: class-weighted loss, n / (K * n_k) from the train split
    grad_clip: float | None = 10.0
    seed: int = 0
    precision: str = "no"
    activation_checkpointing: str = "off"  # off | backbone | all: recompute blocks (and embedding stages) in backward
    frozen_dtype: str = "auto"  # auto | fp32: frozen weights in the precision's half dtype (see models/frozen_dtype.py)
    deterministic: bool | None = None  # None: on CPU only (free there); CUDA's deterministic kernels are slow
    eval_every: int = 1
    checkpoint_every: int = 0
    stop_after_steps: int | None = None
    log_every: int = 10


@dataclass
class RunConfig:
    """One training run: task, model options, data pipeline, recipe, output folder."""

    task: str = "classification"
    run_dir: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    name: str = "run"
    bundle: str | None = None  # an `appt bundle` folder: data and frozen backbone come from it (appt train --bundle)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------------------------
# loading


def load_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML config (following ``base:``), apply ``key=value`` overrides, validate types."""
    path = Path(path)
    raw = _read_with_bases(path, seen=())
    raw.setdefault("name", path.stem)
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(raw, key, value)
    return config_from_dict(raw, source=str(path))


def config_from_dict(raw: dict[str, Any], source: str = "config") -> RunConfig:
    """Build a :class:`RunConfig` from a plain dict; unknown keys and bad values -> ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    check_keys(RunConfig, raw, "", source)
    raw = _expand_env(deep_merge(RunConfig().to_dict(), raw))
    cfg = _to_dataclass(RunConfig, raw, prefix="", source=source)
    # Relative paths are relative to where the command runs; stored absolute so that the saved
    # copy of the config (and --resume) works from any folder.
    cfg.data.root = _absolute(cfg.data.root)
    if cfg.run_dir is not None:
        cfg.run_dir = _absolute(cfg.run_dir)
    if cfg.bundle is not None:
        cfg.bundle = _absolute(cfg.bundle)
    from appt.tasks import TASKS  # the task registry, filled as appt.tasks imports its modules

    if cfg.task not in TASKS:
        raise ConfigError(f"{source}: task={cfg.task!r} is not one of {', '.join(TASKS)}")
    if cfg.train.schedule not in SCHEDULES:
        raise ConfigError(f"{source}: train.schedule={cfg.train.schedule!r} is not one of {', '.join(SCHEDULES)}")
    if cfg.train.precision not in PRECISIONS:
        raise ConfigError(f"{source}: train.precision={cfg.train.precision!r} is not one of {PRECISIONS}")
    for key, allowed in (("activation_checkpointing", CHECKPOINT_MODES), ("frozen_dtype", FROZEN_DTYPES)):
        if getattr(cfg.train, key) not in allowed:
            raise ConfigError(f"{source}: train.{key}={getattr(cfg.train, key)!r} is not one of {', '.join(allowed)}")
    if not 0.0 <= cfg.data.val_fraction < 1.0:
        raise ConfigError(f"{source}: data.val_fraction must be in [0, 1), got {cfg.data.val_fraction}")
    for key in ("batch_size", "num_points"):
        if getattr(cfg.data, key) < 1:
            raise ConfigError(f"{source}: data.{key} must be >= 1")
    if cfg.train.epochs < 1 or cfg.train.eval_every < 1:
        raise ConfigError(f"{source}: train.epochs and train.eval_every must be >= 1")
    model_config_kwargs(cfg.model, source)  # validate now, before any data is read
    return cfg


def model_config_kwargs(section: dict[str, Any], source: str) -> dict[str, Any]:
    """Check the ``model:`` section against ``APPTConfig`` / ``BackboneSpec`` and coerce its types.

    Returns keyword arguments for ``APPTConfig`` (with ``backbone`` as a ``BackboneSpec``).
    """
    from appt.backbones.base import BackboneSpec
    from appt.models.config import APPTConfig

    section = dict(section)
    backbone = section.pop("backbone", None) or {}
    if not isinstance(backbone, dict):
        raise ConfigError(f"{source}: model.backbone must be a mapping (family, name, ...)")
    check_keys(APPTConfig, section, "model.", source)
    check_keys(BackboneSpec, backbone, "model.backbone.", source)
    hints = typing.get_type_hints(APPTConfig)
    kwargs = {k: coerce(v, hints[k], f"model.{k}", source) for k, v in section.items()}
    if backbone:
        if "family" not in backbone:
            raise ConfigError(f"{source}: model.backbone.family is required")
        spec_hints = typing.get_type_hints(BackboneSpec)
        spec = {k: coerce(v, spec_hints[k], f"model.backbone.{k}", source) for k, v in backbone.items()}
        kwargs["backbone"] = BackboneSpec(**spec)
    return kwargs


def _absolute(path: str) -> str:
    return os.path.normpath(Path(path).expanduser().absolute())


def save_config(cfg: RunConfig, path: str | os.PathLike) -> None:
    """Write the fully resolved config (no ``base:``, env vars expanded) as YAML."""
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)
    Path(path).write_text(text)


def _read_with_bases(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: circular base: chain")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    bases = raw.pop("base", None) or []
    merged: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = deep_merge(merged, _read_with_bases(base_path(base, path.parent), seen + (path.resolve(),)))
    return deep_merge(merged, raw)


def base_path(base: str, folder: Path) -> Path:
    """Where a ``base:`` entry points: ``appt:NAME`` is a config shipped inside the package
    (:mod:`appt.configs`, so a YAML anywhere can name it), anything else a path relative to ``folder``."""
    if isinstance(base, str) and base.startswith(SHIPPED_PREFIX):
        from appt.configs import shipped_config

        return shipped_config(base[len(SHIPPED_PREFIX):])
    return folder / base


def read_bases(bases: list[str], folder: Path) -> dict[str, Any]:
    """The merge of ``bases`` (as a ``base:`` list written in ``folder`` would give)."""
    merged: dict[str, Any] = {}
    for base in bases:
        merged = deep_merge(merged, _read_with_bases(base_path(base, folder), seen=()))
    return merged


def deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``b`` over ``a``; nested mappings merge key by key, everything else is replaced."""
    out = dict(a)
    for key, value in b.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# ----------------------------------------------------------------------------------------------
# overrides


def parse_override(item: str) -> tuple[str, Any]:
    """``"train.lr=1e-3"`` -> ``("train.lr", 0.001)``; the value is read as YAML."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key, text = item.split("=", 1)
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key):
        raise ConfigError(f"--set {item!r}: {key!r} is not a dotted key")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    return key, value


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set ``raw["a"]["b"] = value`` for ``key="a.b"``, creating mappings on the way."""
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


# ----------------------------------------------------------------------------------------------
# environment variables in strings: ${VAR} and ${VAR:-default}

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str) -> str:
    """Replace ``${VAR}`` / ``${VAR:-default}``; an unset variable without default -> ConfigError."""

    def sub(m: re.Match[str]) -> str:
        value = os.environ.get(m.group(1))
        if value:
            return value
        if m.group(2) is None:
            raise ConfigError(f"environment variable {m.group(1)} is not set (used in {text!r})")
        return m.group(2)

    return _ENV.sub(sub, text)


def _expand_env(node: Any) -> Any:
    if isinstance(node, str):
        return expand_env(node)
    if isinstance(node, dict):
        return {k: _expand_env(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_env(v) for v in node]
    return node


# ----------------------------------------------------------------------------------------------
# dict -> dataclass with type checks (shared with builders for APPTConfig / BackboneSpec)


def check_keys(cls: type, raw: dict[str, Any], prefix: str, source: str) -> None:
    """ConfigError naming the first key of ``raw`` that ``cls`` has no field for."""
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            raise ConfigError(
                f"{source}: unknown config key '{prefix}{key}' (known: {', '.join(sorted(names))})"
            )


def _to_dataclass(cls: type, raw: dict[str, Any], prefix: str, source: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.')} must be a mapping")
    check_keys(cls, raw, prefix, source)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _to_dataclass(hint, value or {}, f"{prefix}{key}.", source)
        else:
            kwargs[key] = coerce(value, hint, f"{prefix}{key}", source)
    return cls(**kwargs)


def coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Check ``value`` against a type hint, converting the lossless cases (``"1e-3"`` -> float)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if type(value) in args:  # int | float keeps 1.0 (a fraction) apart from 1 (a count)
            return value
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, key, source)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            if origin is not tuple:
                raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
            value = [value]  # a single stage value, e.g. neighbors: 16
        item = args[0] if args else Any
        items = [coerce(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
    return value
