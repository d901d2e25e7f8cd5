"""Turn a :class:`RunConfig` into the objects a run needs: datasets, model, optimizer, schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from appt.errors import ConfigError, DataError
from appt.tasks import get_task
from appt.training.config import RunConfig, model_config_kwargs


@dataclass
class DataBundle:
    """The datasets of a run. ``eval`` picks the best epoch: the validation split when
    ``data.val_fraction > 0``, else the test split (the field's convention).

    ``classes``: class names (the object categories for part segmentation); ``category_parts``
    (part segmentation only): category name -> its part ids (the task's, see :mod:`appt.tasks`).
    """

    train: Any
    eval: Any
    test: Any
    classes: list[str]
    in_channels: int
    category_parts: dict[str, list[int]] | None = None

    @property
    def eval_is_test(self) -> bool:
        return self.eval is self.test


def build_split(cfg: RunConfig, split: str, train_transforms: bool, subset: int | None) -> Any:
    """One dataset of the configured kind (``build_dataset`` of :mod:`appt.data`)."""
    from appt.data import build_dataset

    d = cfg.data
    if not Path(d.root).exists():
        raise DataError(d.root, "data root not found (set data.root, or APPT_DATA for the shipped configs)")
    carve = {"val_fraction": d.val_fraction} if d.val_fraction > 0 and split in ("train", "val") else {}
    return build_dataset(
        d.dataset, root=d.root, split=split, num_points=d.num_points,
        transforms=d.train_transforms if train_transforms else d.test_transforms,
        seed=cfg.train.seed, subset=subset, **carve, **d.options,
    )


def build_data(cfg: RunConfig, with_train: bool = True) -> DataBundle:
    """Train / eval / test datasets; with ``val_fraction`` the validation part is a seeded per-class
    hold-out of the train split (made by ``build_dataset``)."""
    if cfg.bundle:  # prepared arrays from an `appt bundle` folder instead of the data files
        from appt.training.bundle import bundle_data

        return bundle_data(cfg, with_train)
    d = cfg.data
    test = build_split(cfg, d.test_split, train_transforms=False, subset=d.test_subset)
    train = evaluation = None
    if with_train:
        train = build_split(cfg, d.train_split, train_transforms=True, subset=d.subset)
        # test_split "val" (data without a test split, appt train --data): the hold-out is the test set
        held_out = d.val_fraction > 0 and d.test_split != "val"
        evaluation = build_split(cfg, "val", False, subset=None) if held_out else test
    in_channels = int(test[0]["points"].shape[-1])
    parts = get_task(cfg.task, test.classes).category_parts
    return DataBundle(train, evaluation if with_train else test, test, list(test.classes), in_channels, parts)


def model_config(cfg: RunConfig, data: DataBundle | None) -> Any:
    """The ``APPTConfig`` of ``cfg.model`` completed from the data (class count, input channels,
    and for part segmentation the part and category counts). Without data (``appt convert``,
    ``appt info`` before the dataset is at hand) the model section must set ``num_classes`` and
    ``in_channels`` itself, as the paper presets do."""
    from appt.models import APPTConfig

    kwargs = model_config_kwargs(cfg.model, "config")
    if data is None:
        missing = [key for key in ("num_classes", "in_channels") if key not in kwargs]
        if missing:
            raise ConfigError(f"model.{missing[0]} must be set in the config to build the model without its data")
        return APPTConfig(**kwargs)
    derived = get_task(cfg.task, data.classes).data_config(data.in_channels)
    for key, value in derived.items():
        if key in kwargs and kwargs[key] != value:
            raise ConfigError(f"model.{key}={kwargs[key]} but the data gives {value}; remove the key")
        kwargs[key] = value
    return APPTConfig(**kwargs)


def build_model(cfg: RunConfig, data: DataBundle | None) -> nn.Module:
    """The task model for ``cfg.model`` (see :func:`model_config`).

    Seeds torch first so that anything drawn at random in construction (fresh layers) is the
    same in every process and on resume.
    """
    config = model_config(cfg, data)
    model_class = get_task(cfg.task).model_class(config.seg_model)
    torch.manual_seed(cfg.train.seed)
    if cfg.bundle:  # the frozen backbone staged in an `appt bundle` folder
        from appt.training.bundle import staged_backbones

        with staged_backbones(cfg.bundle):
            return model_class(config)
    return model_class(config)


def build_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable tensors; biases and norm/BN scales (1-D tensors) get no weight decay,
    as in the field's fine-tuning code, unless ``train.decay_1d`` (the authors' recipe decays all)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 and not cfg.train.decay_1d else decay).append(p)
    if not decay and not no_decay:
        raise ConfigError("the model has no trainable parameters (check model.variant)")
    t = cfg.train
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=t.lr, betas=tuple(t.betas), eps=t.adam_eps)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: RunConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule: linear warm-up for ``warmup_epochs``, then cosine from ``lr`` to ``min_lr``
    over ``schedule_epochs`` (default: the rest of the run; ``min_lr`` after it), or with
    ``schedule: step`` ``lr * step_gamma ** (epoch // step_epochs)``, never below ``min_lr``.
    ``schedule_per_epoch`` holds the lr for a whole epoch, as epoch-stepped schedulers do."""
    t = cfg.train
    spe = max(1, steps_per_epoch)
    warmup = int(round(t.warmup_epochs * spe))
    length = t.epochs * spe - warmup if t.schedule_epochs is None else int(round(t.schedule_epochs * spe))
    floor = min(1.0, t.min_lr / t.lr) if t.lr > 0 else 0.0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if t.schedule_per_epoch:
            step = step // spe * spe
        if t.schedule == "step":
            return max(floor, t.step_gamma ** (step // spe // max(1, t.step_epochs)))
        progress = min(1.0, (step - warmup) / max(1, length))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
