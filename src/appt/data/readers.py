"""Reading one file into a :class:`~appt.data.cloud.Cloud`, whatever its format.

Why one entry point: datasets, the CLI and users' own scripts all meet files of every format,
and each must either get a valid cloud or one :class:`~appt.errors.DataError` naming the file and
the problem -- never a library's bare ``KeyError``/``struct.error`` from deep inside a parser.
Parsing is left to well-kept libraries (pypcd4, plyfile, h5py, NumPy, trimesh for meshes).

Column rule for tables (``.txt/.xyz/.pts``, ``.npy``, ``.npz``, ``.h5`` arrays), by column count:
3 = xyz; 4 = xyz + intensity (intensity dropped); 6 = xyz + normals when (nearly) every row of
columns 4-6 has unit length or is zero, else xyz + RGB when they lie in [0, 255] (scaled to
[0, 1] if any exceeds 1), else refused; 7 = xyz + normals + per-point part label (ShapeNetPart).
Any other count is refused rather than guessed. A ``.pts`` file may start with a point-count line.
PLY files are read as their vertex list (faces, if any, are ignored); ``.off/.obj/.stl`` meshes
are sampled on their surface (see :mod:`appt.data.meshes`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from appt.data.cloud import Cloud, as_float_array, make_cloud, parsing
from appt.data.meshes import MESH_FORMATS, read_mesh_points
from appt.errors import DataError

POINTS_KEYS = ("points", "xyz", "data", "pos")
NORMALS_KEYS = ("normals", "normal")
COLORS_KEYS = ("colors", "colours", "rgb")
SEG_KEYS = ("seg", "part_label", "pid")
TEXT_FORMATS = (".txt", ".xyz", ".pts")
POINT_FORMATS = (".pcd", ".ply", *TEXT_FORMATS, ".npy", ".npz", ".h5", ".hdf5")
SUPPORTED_FORMATS = POINT_FORMATS + MESH_FORMATS


def read_points(path: str | Path, *, index: int | None = None, mesh_points: int = 10_000, seed: int = 0) -> Cloud:
    """Read one point cloud (or sample one mesh) from ``path``.

    ``index`` picks one cloud of a multi-cloud array file (``.npy/.npz/.h5`` holding ``(M, N, C)``).
    Meshes yield ``mesh_points`` surface samples with face normals, drawn with ``seed``.
    Returns a validated cloud; raises :class:`DataError` for anything unreadable or invalid.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    if not path.is_file():
        raise DataError(path, "is not a file")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_FORMATS:
        raise DataError(path, f"unsupported file type {suffix or '(none)'!r}; supported: {' '.join(SUPPORTED_FORMATS)}")
    if index is not None and (isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0):
        raise DataError(path, f"index must be a non-negative integer, got {index!r}")
    if suffix in MESH_FORMATS:
        _single_cloud(path, index)
        return read_mesh_points(path, mesh_points, seed)
    return _READERS[suffix](path, index)


# ------------------------------------------------------------------------------------ tables


def cloud_from_table(path: object, table: np.ndarray) -> Cloud:
    """Interpret an ``(N, C)`` numeric table by the column rule of this module."""
    if table.ndim != 2:
        raise DataError(path, f"expected an (N, C) table of points, got shape {table.shape}")
    table = as_float_array(path, table, "point table")
    n, cols = table.shape
    if n == 0:
        raise DataError(path, "empty cloud (0 points)")
    if cols not in (3, 4, 6, 7):
        hint = " (transposed? points must be rows)" if n in (3, 4, 6, 7) else ""
        raise DataError(
            path,
            f"{cols} columns; expected 3 (xyz), 4 (xyz+intensity), 6 (xyz+normals or xyz+rgb) "
            f"or 7 (xyz+normals+part label){hint}",
        )
    finite = np.isfinite(table).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise DataError(path, f"{len(bad)} rows hold NaN/Inf (first: row {bad[0]})")
    xyz = table[:, :3]
    if cols == 7:
        return make_cloud(path, xyz, normals=table[:, 3:6], seg=table[:, 6])
    if cols == 6:
        kind, values = normals_or_colors(path, table[:, 3:6])
        return make_cloud(path, xyz, **{kind: values})
    return make_cloud(path, xyz)


def normals_or_colors(path: object, cols: np.ndarray) -> tuple[str, np.ndarray]:
    """Decide whether three extra columns are unit normals or RGB colours (see module doc)."""
    norms = np.linalg.norm(cols.astype(np.float64), axis=1)
    unit = (np.abs(norms - 1.0) < 0.05) | (norms == 0.0)
    if unit.mean() >= 0.99:
        return "normals", cols
    lo, hi = float(cols.min()), float(cols.max())
    if lo >= 0.0 and hi <= 255.0:
        return "colors", cols / 255.0 if hi > 1.0 else cols
    raise DataError(path, "columns 4-6 are neither unit normals nor RGB colours in [0, 255]")


def _read_text(path: Path, index: int | None) -> Cloud:
    _single_cloud(path, index)
    with parsing(path, "text file"):
        lines = path.read_text(encoding="utf-8").splitlines()
    start, expected = _skip_count_line(lines)
    data = [ln for ln in lines[start:] if ln.strip() and not ln.lstrip().startswith("#")]
    if not data:
        raise DataError(path, "empty cloud (no point rows)")
    delimiter = "," if "," in data[0] else None
    with parsing(path, "text file"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = np.loadtxt(data, delimiter=delimiter, dtype=np.float64, ndmin=2)
    if expected is not None and expected != table.shape[0]:
        raise DataError(path, f"header announces {expected} points but {table.shape[0]} rows follow (truncated?)")
    return cloud_from_table(path, table)


def _skip_count_line(lines: list[str]) -> tuple[int, int | None]:
    """``(first data line, announced count)``: ``.pts`` files may open with a lone point count."""
    for i, line in enumerate(lines):
        token = line.strip()
        if not token or token.startswith("#"):
            continue
        if token.isdigit():
            return i + 1, int(token)
        return i, None
    return len(lines), None


def _single_cloud(path: object, index: int | None) -> None:
    if index not in (None, 0):
        raise DataError(path, f"file holds one cloud; index={index} is out of range")


def _pick(path: object, arr: np.ndarray, index: int | None, cloud_ndim: int = 2) -> np.ndarray:
    """One cloud from an array holding one (``cloud_ndim`` dims: ``(N, C)``, or ``(N,)`` records)
    or a stack of them (one more leading dim; ``index`` picks)."""
    if arr.ndim == cloud_ndim + 1:
        if index is None:
            raise DataError(path, f"holds {arr.shape[0]} clouds of shape {arr.shape[1:]}; pass index= to pick one")
        if index >= arr.shape[0]:
            raise DataError(path, f"index {index} is out of range for {arr.shape[0]} clouds")
        return arr[index]
    if arr.ndim == cloud_ndim:
        _single_cloud(path, index)
        return arr
    want = "(N, C) or (M, N, C)" if cloud_ndim == 2 else "(N,) or (M, N) structured"
    raise DataError(path, f"expected an {want} array of points, got shape {arr.shape}")


def _cloud_from_arrays(path: object, arrays: Mapping[str, Any], index: int | None) -> Cloud:
    """Build a cloud from named arrays (npz members, h5 datasets): points plus optional extras.

    ``arrays`` values only need ``ndim``, ``shape`` and ``[i]``, so h5 datasets are read row-wise.
    """
    key = next((k for k in POINTS_KEYS if k in arrays), None)
    if key is None:
        if len(arrays) != 1:
            raise DataError(path, f"no points array: expected one of {', '.join(POINTS_KEYS)}; found {', '.join(arrays) or 'nothing'}")
        key = next(iter(arrays))
    points = arrays[key]
    table = _pick(path, points, index)
    extra = {}
    for field, keys in (("normals", NORMALS_KEYS), ("colors", COLORS_KEYS), ("seg", SEG_KEYS)):
        k = next((k for k in keys if k in arrays and k != key), None)
        if k is None:
            continue
        arr = arrays[k]
        if points.ndim == 3:
            if arr.shape[:1] != points.shape[:1]:
                raise DataError(path, f"'{k}' has shape {arr.shape} but '{key}' holds {points.shape[0]} clouds")
            arr = arr[index]
        extra[field] = arr
    if not extra:
        return cloud_from_table(path, table)
    if table.ndim != 2 or table.shape[1] != 3:
        table = cloud_from_table(path, table).xyz  # e.g. (N, 6) points plus a normals array: xyz only
    return make_cloud(path, table, **extra)


def _read_npy(path: Path, index: int | None) -> Cloud:
    with parsing(path, "npy file"):
        holds_objects = _npy_holds_objects(path)
    if holds_objects:
        raise DataError(path, "holds Python objects (a pickled array); only numeric arrays are read")
    with parsing(path, "npy file"):
        arr = np.load(path, allow_pickle=False, mmap_mode="r")  # a stack of clouds: read one row only
    if arr.dtype.names:
        names = set(arr.dtype.names)
        if not {"x", "y", "z"} <= names:
            raise DataError(path, f"structured array without x/y/z fields (fields: {', '.join(arr.dtype.names)})")
        with parsing(path, "npy file"):
            sub = np.array(_pick(path, arr, index, cloud_ndim=1))
        cols = [np.asarray(sub[c], dtype=np.float64) for c in ("x", "y", "z")]
        normals = [np.asarray(sub[c]) for c in ("nx", "ny", "nz")] if {"nx", "ny", "nz"} <= names else None
        return make_cloud(path, np.stack(cols, axis=1), normals=None if normals is None else np.stack(normals, axis=1))
    table = _pick(path, arr, index)
    with parsing(path, "npy file"):
        table = np.array(table)  # copy out of the memory map
    return cloud_from_table(path, table)


def _npy_holds_objects(path: Path) -> bool:
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        return read(fh)[2].hasobject


def _read_npz(path: Path, index: int | None) -> Cloud:
    with parsing(path, "npz file"), np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return _cloud_from_arrays(path, arrays, index)


def _read_h5(path: Path, index: int | None) -> Cloud:
    import h5py

    with parsing(path, "HDF5 file"), h5py.File(path, "r") as f:  # rows are read lazily inside
        return _cloud_from_arrays(path, {k: f[k] for k in f if isinstance(f[k], h5py.Dataset)}, index)


# ----------------------------------------------------------------------------------- pcd / ply


def _read_pcd(path: Path, index: int | None) -> Cloud:
    from pypcd4 import PointCloud

    _single_cloud(path, index)
    with parsing(path, "pcd file"):
        pc = PointCloud.from_path(path)
        fields, declared = tuple(pc.fields), int(pc.metadata.points)
    if not {"x", "y", "z"} <= set(fields):
        raise DataError(path, f"no x/y/z fields (fields: {' '.join(fields)})")
    normals = colors = seg = None
    with parsing(path, "pcd file"):
        xyz = pc.numpy(("x", "y", "z"))
        if {"normal_x", "normal_y", "normal_z"} <= set(fields):
            normals = pc.numpy(("normal_x", "normal_y", "normal_z"))
        packed = next((pc.pc_data[f] for f in ("rgb", "rgba") if f in fields), None)
        if packed is not None and packed.dtype.itemsize == 4:  # PCL packs 0x00RRGGBB into a float or uint
            colors = PointCloud.decode_rgb(packed.reshape(-1)).astype(np.float32) / 255.0
        elif {"r", "g", "b"} <= set(fields):
            colors = pc.numpy(("r", "g", "b")).astype(np.float32) / 255.0
        if "label" in fields:
            seg = pc.numpy(("label",)).reshape(-1)
    if xyz.shape[0] != declared:
        raise DataError(path, f"header announces {declared} points but the data holds {xyz.shape[0]} (truncated?)")
    return make_cloud(path, xyz, normals=normals, colors=colors, seg=seg)


def _read_ply(path: Path, index: int | None) -> Cloud:
    from plyfile import PlyData

    _single_cloud(path, index)
    with parsing(path, "ply file"):
        ply = PlyData.read(str(path))
    if "vertex" not in ply:
        raise DataError(path, "no 'vertex' element")
    v = ply["vertex"].data
    names = set(v.dtype.names or ())
    if not {"x", "y", "z"} <= names:
        raise DataError(path, f"vertex element has no x/y/z properties (has: {' '.join(sorted(names))})")
    xyz = np.stack([v["x"], v["y"], v["z"]], axis=1)
    normals = None
    for trio in (("nx", "ny", "nz"), ("normal_x", "normal_y", "normal_z")):
        if set(trio) <= names:
            normals = np.stack([v[c] for c in trio], axis=1)
            break
    colors = None
    for trio in (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue")):
        if set(trio) <= names:
            rgb = np.stack([v[c] for c in trio], axis=1)
            colors = rgb.astype(np.float32) / 255.0 if rgb.dtype.kind in "iu" else rgb
            break
    return make_cloud(path, xyz, normals=normals, colors=colors)


_READERS: dict[str, Callable[[Path, int | None], Cloud]] = {
    ".pcd": _read_pcd,
    ".ply": _read_ply,
    ".npy": _read_npy,
    ".npz": _read_npz,
    ".h5": _read_h5,
    ".hdf5": _read_h5,
    **{s: _read_text for s in TEXT_FORMATS},
}
