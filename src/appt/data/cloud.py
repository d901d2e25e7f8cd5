"""The in-memory point cloud every reader returns and every transform takes, and its checks.

Why a record with named fields rather than one ``(N, C)`` array: which columns are normals,
colours or part labels must not depend on position conventions that differ between formats, and
a resampling step has to move every per-point field together. The model-facing ``(N, C)`` tensor
is assembled only at the end (see :mod:`appt.data.pipeline`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from appt.errors import DataError

# Coordinates beyond this are treated as corrupt: no scanner or mesh unit produces them, while a
# misread binary field (wrong dtype or endianness) does, and squaring them overflows float32.
MAX_ABS_COORD = 1e12
AXES = {"x": 0, "y": 1, "z": 2}


@dataclass
class Cloud:
    """One point cloud: ``xyz (N, 3)`` float32 plus optional per-point fields of the same N.

    ``normals (N, 3)`` float32, ``colors (N, 3)`` float32 in ``[0, 1]``, ``seg (N,)`` int64 part
    labels. ``up_axis`` is the gravity axis (0/1/2 = x/y/z) used by rotation and the height channel.
    """

    xyz: np.ndarray
    normals: np.ndarray | None = None
    colors: np.ndarray | None = None
    seg: np.ndarray | None = None
    up_axis: int = 1

    def __len__(self) -> int:
        return int(self.xyz.shape[0])

    def take(self, idx: np.ndarray) -> Cloud:
        """The cloud restricted/reordered to point indices ``idx`` (every per-point field follows)."""
        return Cloud(
            self.xyz[idx],
            None if self.normals is None else self.normals[idx],
            None if self.colors is None else self.colors[idx],
            None if self.seg is None else self.seg[idx],
            self.up_axis,
        )

    def replace(self, **changes: object) -> Cloud:
        """A copy with some fields replaced (arrays are not copied)."""
        fields = {"xyz": self.xyz, "normals": self.normals, "colors": self.colors, "seg": self.seg, "up_axis": self.up_axis}
        fields.update(changes)  # an unknown name fails in __init__ (TypeError)
        return Cloud(**fields)


@contextmanager
def parsing(path: object, what: str) -> Iterator[None]:
    """Turn any failure of a third-party parser inside the block into one :class:`DataError`.

    Only library calls go inside (pypcd4, plyfile, h5py, NumPy loaders, trimesh, pickle): they
    fail on damaged files with every exception type there is. Our own checks stay outside, so a
    bug of ours is never disguised as a corrupt file.
    """
    try:
        yield
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 -- see docstring
        lines = str(exc).strip().splitlines()
        msg = lines[0] if lines else type(exc).__name__
        raise DataError(path, f"corrupt or truncated {what}: {msg[:200]}") from None


def axis_index(axis: int | str) -> int:
    """``"x"|"y"|"z"|0|1|2`` -> 0/1/2; anything else is a ``ValueError`` for the caller to wrap."""
    if isinstance(axis, str) and axis.lower() in AXES:
        return AXES[axis.lower()]
    if isinstance(axis, (int, np.integer)) and not isinstance(axis, bool) and 0 <= int(axis) <= 2:
        return int(axis)
    raise ValueError(f"axis must be x, y, z or 0..2, got {axis!r}")


def as_float_array(path: object, arr: np.ndarray, what: str) -> np.ndarray:
    """``arr`` as float32 after checking it holds real numbers (int or float, not bool/str/object)."""
    if arr.dtype.kind not in "iuf":
        raise DataError(path, f"{what} has dtype {arr.dtype}, expected integer or floating-point numbers")
    with np.errstate(over="ignore", invalid="ignore"):
        return np.ascontiguousarray(arr, dtype=np.float32)


def as_label_array(path: object, arr: np.ndarray, what: str) -> np.ndarray:
    """Integer labels as int64; floats are accepted only if every value is a whole number."""
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        if finite.all() and np.all(arr == np.round(arr)) and np.all(np.abs(arr) < 2**31):
            return arr.astype(np.int64)
        bad = int(np.argmax(~finite | (arr != np.round(arr)))) if arr.size else 0
        raise DataError(path, f"{what} must be whole numbers, entry {bad} is {arr.reshape(-1)[bad]!r}")
    raise DataError(path, f"{what} has dtype {arr.dtype}, expected integers")


def make_cloud(
    path: object,
    xyz: np.ndarray,
    normals: np.ndarray | None = None,
    colors: np.ndarray | None = None,
    seg: np.ndarray | None = None,
) -> Cloud:
    """Validate raw arrays from a reader and build a :class:`Cloud`.

    Refuses (with :class:`DataError` naming ``path``): an empty cloud, NaN/Inf in any field,
    coordinates beyond ``MAX_ABS_COORD``, fields whose length differs from the point count.
    """
    xyz = as_float_array(path, np.asarray(xyz), "xyz")
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise DataError(path, f"xyz must have shape (N, 3), got {xyz.shape}")
    n = xyz.shape[0]
    if n == 0:
        raise DataError(path, "empty cloud (0 points)")
    fields: dict[str, np.ndarray | None] = {"xyz": xyz}
    for name, arr in (("normals", normals), ("colors", colors)):
        if arr is not None:
            arr = as_float_array(path, np.asarray(arr), name)
            if arr.shape != (n, 3):
                raise DataError(path, f"{name} have shape {arr.shape}, expected ({n}, 3)")
        fields[name] = arr
    for name in ("xyz", "normals", "colors"):
        arr = fields[name]
        if arr is None:
            continue
        peak = float(np.abs(arr).max())  # one pass: NaN/Inf propagate into the maximum
        if not np.isfinite(peak):
            bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
            raise DataError(path, f"{len(bad)} points have NaN/Inf {name} (first: point {bad[0]})")
        if name == "xyz" and peak > MAX_ABS_COORD:
            raise DataError(path, f"coordinate magnitude {peak:.3g} exceeds {MAX_ABS_COORD:.0e} (corrupt file or wrong dtype?)")
    if seg is not None:
        seg = as_label_array(path, np.asarray(seg).reshape(-1), "per-point labels")
        if seg.shape[0] != n:
            raise DataError(path, f"{seg.shape[0]} per-point labels for {n} points")
    return Cloud(xyz, fields["normals"], fields["colors"], seg)
