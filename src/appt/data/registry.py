"""Datasets by name: :func:`build_dataset` turns a name, a root and options into a dataset.

Why a registry: configs name datasets as strings (``dataset: scanobjectnn``); each layout
registers a builder ``(root, split, **options) -> PointDataset`` and everything common (the
preparation, transforms, cache, seeded validation hold-out and subset) is applied here once.

The table fills itself: on first use every module of :mod:`appt.data` is imported, so a new layout
is one new file with a ``@register_dataset("name")`` builder, and there is no list of modules to
keep in step. (Importing is deferred to first use because the layouts import this module.)
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import pkgutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from appt.data.base import PointDataset
from appt.data.cache import DiskCache
from appt.data.cloud import axis_index
from appt.data.pipeline import Preparation
from appt.data.splits import holdout_split, stratified_subset
from appt.data.transforms import Compose, TransformSpec, build_transforms
from appt.errors import ConfigError, DataError

Builder = Callable[..., PointDataset]
_BUILDERS: dict[str, Builder] = {}
SPLITS = ("train", "val", "test", "trainval", "all")


def register_dataset(name: str) -> Callable[[Builder], Builder]:
    """Decorator: make a builder ``(root: Path, split: str, **options) -> PointDataset`` available by name."""

    def deco(fn: Builder) -> Builder:
        _BUILDERS[name] = fn
        return fn

    return deco


def available_datasets() -> list[str]:
    _load_builtin()
    return sorted(_BUILDERS)


def build_dataset(
    name: str,
    root: str | os.PathLike,
    split: str = "train",
    num_points: int | None = None,
    transforms: Sequence[TransformSpec] | Compose | None = None,
    seed: int = 0,
    subset: int | float | str | None = None,
    *,
    val_fraction: float | None = None,
    sampling: str = "fps",
    normalize: bool = True,
    use_normals: bool = False,
    use_colors: bool = False,
    use_height: bool = False,
    up_axis: int | str | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    **options: Any,
) -> PointDataset:
    """Build dataset ``name`` from ``root`` for ``split`` (train / val / test; some layouts: trainval, all).

    ``num_points`` + ``sampling`` (fps | random | first) fix the point count; ``normalize`` centres
    and scales to the unit sphere; ``use_normals / use_colors / use_height`` choose the channels;
    ``transforms`` (names, dicts or callables) augment per sample. ``val_fraction`` carves a seeded
    per-class validation split from train (``split="val"`` returns it, ``"train"`` the rest);
    ``subset`` then keeps a seeded per-class subset (count, fraction or ``"K/class"``). ``up_axis`` overrides the
    layout's gravity axis. ``options`` go to the layout's builder (e.g. ``variant`` for ScanObjectNN).
    """
    _load_builtin()
    if name not in _BUILDERS:
        raise ConfigError(f"unknown dataset {name!r}; available: {', '.join(sorted(_BUILDERS))}")
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    builder = _BUILDERS[name]
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(root, "not found")
    carve = bool(val_fraction) and split in ("train", "val")
    source_split = "train" if carve else split
    try:
        inspect.signature(builder).bind(root, source_split, **options)
    except TypeError:
        allowed = [p for p in inspect.signature(builder).parameters][2:]
        raise ConfigError(
            f"dataset {name!r} got unknown option(s) {', '.join(options)}; its options: {', '.join(allowed) or 'none'}"
        ) from None
    prep = Preparation(num_points, sampling, bool(normalize), bool(use_normals), bool(use_colors), bool(use_height))
    ds = builder(root, source_split, **options)
    if up_axis is not None:
        try:
            ds.up_axis = axis_index(up_axis)
        except ValueError as exc:
            raise ConfigError(f"up_axis: {exc}") from None
    ds.configure(prep, build_transforms(transforms), seed, _make_cache(cache, cache_dir))
    if len(ds) == 0:
        raise DataError(root, f"split {source_split!r} of {name} holds no shapes")
    if carve:
        train, val = holdout_split(ds.labels, val_fraction, seed)
        ds = ds.select(val if split == "val" else train)
    if subset is not None:
        ds = ds.select(stratified_subset(ds.labels, subset, seed))
    return ds


def _make_cache(enabled: bool, cache_dir: str | os.PathLike | None) -> DiskCache | None:
    """The cache, after checking its folder can be written (a config problem, reported once)."""
    if not enabled:
        return None
    cache = DiskCache(cache_dir)
    try:
        cache.root.mkdir(parents=True, exist_ok=True)
        probe = cache.root / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"cache folder {cache.root} is not writable ({exc.strerror}); set cache_dir or cache=False") from None
    return cache


@functools.cache
def _load_builtin() -> None:
    """Import every module of :mod:`appt.data`, which registers the layouts they define (once)."""
    import appt.data as package

    for module in pkgutil.iter_modules(package.__path__, f"{package.__name__}."):
        importlib.import_module(module.name)
