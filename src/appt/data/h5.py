"""HDF5 release files (ModelNet40 ``ply_hdf5_2048``, ScanObjectNN ``h5_files``): one checked reader.

Why its own module: several layouts ship their clouds as ``data (M, N, C)`` + ``label (M,)``
arrays in HDF5; each layout module only names its files and classes and calls these helpers.
``h5py`` is imported on first read, so layouts that never touch HDF5 do not need it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from appt.data.base import ArrayBlock, Record
from appt.data.cloud import as_label_array, parsing
from appt.errors import DataError


def load_h5_block(path: Path, *, points_key: str = "data", label_key: str = "label",
                  normals_key: str | None = None) -> tuple[ArrayBlock, np.ndarray]:
    """Read one HDF5 release file: ``points (M, N, C)`` float, labels ``(M,)`` int64 (from (M,) or (M, 1)).

    Checks dataset names, shapes and dtypes and names the file in every error.
    """
    import h5py

    if not path.is_file():
        raise DataError(path, "not found")
    with parsing(path, "HDF5 file"), h5py.File(path, "r") as f:
        for key in (points_key, label_key):
            if key not in f:
                raise DataError(path, f"no '{key}' dataset (found: {', '.join(f.keys()) or 'nothing'})")
        points, labels = f[points_key][()], f[label_key][()]
        normals = f[normals_key][()] if normals_key and normals_key in f else None
    if points.ndim != 3 or points.shape[2] not in (3, 6):
        raise DataError(path, f"'{points_key}' has shape {points.shape}, expected (M, N, 3) or (M, N, 6)")
    if points.dtype.kind not in "fiu":
        raise DataError(path, f"'{points_key}' has dtype {points.dtype}, expected floats")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or labels.shape[0] != points.shape[0]:
        raise DataError(path, f"'{label_key}' has shape {labels.shape}, expected ({points.shape[0]},) or ({points.shape[0]}, 1)")
    labels = as_label_array(path, labels, f"'{label_key}'")
    if normals is not None and normals.shape != points.shape[:2] + (3,):
        raise DataError(path, f"'{normals_key}' has shape {normals.shape}, expected {points.shape[:2] + (3,)}")
    return ArrayBlock(str(path), points, normals), labels


def array_records(block: ArrayBlock, labels: np.ndarray) -> list[Record]:
    """One record per row of an array file (path shown as ``file[row]``)."""
    return [Record(f"{block.file}[{i}]", int(lab), i, block.file) for i, lab in enumerate(labels)]
