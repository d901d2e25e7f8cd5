"""The dataset base class: records (one per shape) in, sample dicts out.

Why one base: every dataset must deliver the same sample dict, draw randomness the same way
(``default_rng([seed, epoch, index])``), cache the same way and narrow to subsets/validation
splits the same way; only *where records come from* and *how one record is read* differ.
Subclasses: :class:`FileDataset` (one file per shape) and :class:`ArrayDataset` (rows of arrays
held in memory, e.g. HDF5 releases).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from appt.data.cache import DiskCache, file_identity
from appt.data.cloud import Cloud, make_cloud
from appt.data.pipeline import Preparation
from appt.data.readers import cloud_from_table, read_points
from appt.data.transforms import Compose
from appt.errors import ConfigError, DataError


@dataclass(frozen=True)
class Record:
    """One shape: where it comes from (shown in samples and errors), its label, and for rows of an
    array file the ``row`` and the ``source`` file key (``path`` is then ``"file.h5[12]"``)."""

    path: str
    label: int
    row: int | None = None
    source: str | None = None


class PointDataset(Dataset):
    """A labelled set of clouds; ``ds[i]`` -> ``{"points": (N, C) float, "label": () long, "path": str}``.

    Attributes: ``classes`` (list of names), ``num_classes``, ``labels`` (``(len,)`` int64),
    ``up_axis`` (gravity axis 0/1/2), ``prep`` (:class:`Preparation`), ``seed``, ``epoch``.
    """

    def __init__(self, records: Sequence[Record], classes: Sequence[str], *, root: str | Path, up_axis: int = 1) -> None:
        self.root = str(root)
        self.records = list(records)
        self.classes = [str(c) for c in classes]
        self.up_axis = up_axis
        self._index = np.arange(len(self.records))
        self._labels = np.array([r.label for r in self.records], dtype=np.int64)
        for rec in self.records:
            if not 0 <= rec.label < len(self.classes):
                raise DataError(rec.path, f"label {rec.label} is outside the {len(self.classes)} classes (0..{len(self.classes) - 1})")
        self.prep = Preparation()
        self.transforms = Compose([])
        self.seed = 0
        self.epoch = 0
        self.cache: DiskCache | None = None

    # ------------------------------------------------------------------------- for subclasses
    def read(self, rec: Record) -> Cloud:
        """Read one record's raw cloud (validated)."""
        raise NotImplementedError

    def source_identity(self, rec: Record) -> list | None:
        """What identifies ``rec``'s prepared cloud in the cache; ``None``: not worth caching."""
        return None

    # ------------------------------------------------------------------------------ public API
    def configure(self, prep: Preparation, transforms: Compose, seed: int, cache: DiskCache | None) -> PointDataset:
        """Set the preparation, the per-sample transforms, the seed and the cache (or ``None``)."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
        self.prep, self.transforms, self.seed, self.cache = prep, transforms, int(seed), cache
        return self

    def select(self, positions: Sequence[int] | np.ndarray, labels: np.ndarray | None = None,
               classes: Sequence[str] | None = None) -> PointDataset:
        """A view holding the shapes at ``positions`` (optionally relabelled onto new ``classes``)."""
        view = copy.copy(self)
        positions = np.asarray(positions, dtype=np.int64)
        view._index = self._index[positions]
        view._labels = self._labels[positions] if labels is None else np.asarray(labels, dtype=np.int64)
        if classes is not None:
            view.classes = [str(c) for c in classes]
        return view

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def paths(self) -> list[str]:
        return [self.records[i].path for i in self._index]

    def set_epoch(self, epoch: int) -> None:
        """Reseed per-sample augmentation: sample ``i`` uses ``default_rng([seed, epoch, i])``."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ConfigError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._index)

    def load(self, i: int) -> Cloud:
        """Shape ``i`` after the cached preparation (read, mesh sampling, FPS), before augmentation."""
        rec = self.records[self._index[i]]
        identity = None if self.cache is None else self.source_identity(rec)
        if identity is None:
            cloud = self.prep.fixed(self.read(rec))
        else:
            key = self.cache.key(identity, self.prep.cache_settings())
            cloud = self.cache.get_or_compute(key, lambda: self.prep.fixed(self.read(rec)))
        cloud.up_axis = self.up_axis
        return cloud

    def __getitem__(self, i: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for a dataset of {n} shapes")
        i = int(i) % n
        rec = self.records[self._index[i]]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        out = self.prep.finish(self.load(i), rng, self.transforms, rec.path)
        sample: dict[str, Any] = {
            "points": torch.from_numpy(out["points"]),
            "label": torch.tensor(int(self._labels[i]), dtype=torch.long),
            "path": rec.path,
        }
        if "seg" in out:
            sample["seg"] = torch.from_numpy(np.ascontiguousarray(out["seg"], dtype=np.int64))
        return sample

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} shapes, {self.num_classes} classes, root={self.root!r})"


class FileDataset(PointDataset):
    """One file per shape, any format :func:`~appt.data.readers.read_points` reads.

    Meshes are sampled with ``mesh_points`` points and ``mesh_seed`` (fixed, so the cache is
    shared by runs with different training seeds).
    """

    def __init__(self, records: Sequence[Record], classes: Sequence[str], *, root: str | Path, up_axis: int = 1,
                 mesh_points: int = 10_000, mesh_seed: int = 0) -> None:
        super().__init__(records, classes, root=root, up_axis=up_axis)
        self.mesh_points, self.mesh_seed = mesh_points, mesh_seed

    def read(self, rec: Record) -> Cloud:
        return read_points(rec.path, mesh_points=self.mesh_points, seed=self.mesh_seed)

    def source_identity(self, rec: Record) -> list | None:
        try:
            ident = file_identity(rec.path)
        except OSError:
            return None  # let read() report the missing file
        return [*ident, self.mesh_points, self.mesh_seed]


@dataclass
class ArrayBlock:
    """Clouds of one file held in memory: ``points (M, N, C)`` (or a list of ``(N_i, C)``),
    optional ``normals (M, N, 3)``."""

    file: str
    points: np.ndarray
    normals: np.ndarray | None = None


class ArrayDataset(PointDataset):
    """Rows of in-memory arrays (HDF5 releases, few-shot pickles); records carry ``row``.

    Only FPS results are cached (reading a row from memory costs nothing).
    """

    def __init__(self, records: Sequence[Record], classes: Sequence[str], blocks: dict[str, ArrayBlock], *,
                 root: str | Path, up_axis: int = 1) -> None:
        super().__init__(records, classes, root=root, up_axis=up_axis)
        self.blocks = blocks

    def read(self, rec: Record) -> Cloud:
        block = self.blocks[rec.source]
        table = block.points[rec.row]
        if block.normals is None:
            return cloud_from_table(rec.path, table)
        return make_cloud(rec.path, table[:, :3], normals=block.normals[rec.row])

    def source_identity(self, rec: Record) -> list | None:
        block = self.blocks[rec.source]
        if self.prep.sampling != "fps" or self.prep.num_points in (None, len(block.points[rec.row])):
            return None
        try:
            return [*file_identity(block.file), rec.row]
        except OSError:
            return None  # in-memory data without a file: not cached
