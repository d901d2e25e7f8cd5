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
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from appt.errors import ConfigError
from appt.training.config_files import (
    check_keys,
    coerce,
    deep_merge,
    expand_env_tree,
    parse_override,
    read_with_bases,
    set_dotted,
    to_dataclass,
)

PRECISIONS = ("no", "fp16", "bf16")
CHECKPOINT_MODES = ("off", "backbone", "all", "selective")  # = appt.recompute.CHECKPOINT_MODES (no torch import here)
FROZEN_DTYPES = ("auto", "fp32")  # = appt.models.frozen_dtype.FROZEN_DTYPES
SCHEDULES = ("cosine", "step")


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
    activation_checkpointing: str = "off"  # off | backbone | all | selective: what the backward pass recomputes
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
    raw = read_with_bases(path, seen=())
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
    raw = expand_env_tree(deep_merge(RunConfig().to_dict(), raw))
    cfg = to_dataclass(RunConfig, raw, prefix="", source=source)
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
