"""Prepared clouds as compact arrays, for runs on machines without the data readers.

Why: an offline GPU node may lack pypcd4, plyfile, trimesh and the source files, and limits what
can be staged onto it. :func:`save_split` writes one split's clouds *after* the cached preparation
(:meth:`PointDataset.load`: reading, mesh sampling, FPS to ``num_points``) into one safetensors
file; :class:`BundledDataset` serves them again through the ordinary per-sample steps
(:meth:`Preparation.finish`: random resampling, unit-sphere normalisation, the user's transforms),
so augmentation and the seeding rule ``default_rng([seed, epoch, index])`` are unchanged.

Layout of a split file (``M`` shapes, ``P`` points in all; clouds may differ in size):
  - ``xyz (P, 3)`` float16 or float32: each cloud centred on its centroid and divided by its
    radius (float16 has no room for raw mesh units, which reach 2.3e5 in ModelNet10);
  - ``centre (M, 3)``, ``scale (M,)`` float32: ``raw = xyz * scale + centre``. For float32
    storage the coordinates are kept raw (``centre = 0``, ``scale = 1``), so reading is exact;
  - ``offsets (M + 1,)`` int64: cloud ``i`` is rows ``offsets[i]:offsets[i + 1]``;
  - ``labels (M,)`` int64; optional ``normals (P, 3)`` / ``colors (P, 3)`` in the points' dtype,
    ``seg (P,)`` int16 (int32 if labels exceed int16);
  - metadata (JSON strings): ``classes``, ``paths`` (relative to ``root`` where possible),
    ``root``, ``up_axis``, ``category`` ("1" when samples carry ``category`` = label, as ShapeNetPart).
Only NumPy and safetensors are needed to read it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from appt.data.base import PointDataset, Record
from appt.data.cloud import Cloud
from appt.data.transforms import normalize
from appt.errors import DataError

POINT_DTYPES = {"fp16": np.float16, "fp32": np.float32}
FORMAT = "appt-bundle-split-1"


def _normalising(xyz: np.ndarray) -> tuple[np.ndarray, float]:
    """Centroid ``(3,)`` float32 and radius of a cloud ``(N, 3)`` (1 for a single repeated point)."""
    centre = xyz.astype(np.float64).mean(axis=0)
    radius = float(np.sqrt(((xyz.astype(np.float64) - centre) ** 2).sum(axis=1).max()))
    return centre.astype(np.float32), (radius if radius > 0.0 else 1.0)


def _seg_dtype(seg: np.ndarray) -> type:
    info = np.iinfo(np.int16)
    return np.int16 if seg.size == 0 or (seg.min() >= info.min and seg.max() <= info.max) else np.int32


def split_arrays(dataset: PointDataset, points_dtype: str = "fp16",
                 progress: Any = None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The arrays and metadata of :func:`save_split` (see the module doc for the layout).

    ``progress``: an optional callable run after each shape (e.g. a progress bar's ``update``).
    """
    if points_dtype not in POINT_DTYPES:
        raise ValueError(f"points dtype must be one of {', '.join(POINT_DTYPES)}, got {points_dtype!r}")
    dtype = POINT_DTYPES[points_dtype]
    raw = points_dtype == "fp32"
    parts: dict[str, list[np.ndarray]] = {"xyz": [], "normals": [], "colors": [], "seg": []}
    centres, scales, offsets, present = [], [], [0], None
    for i in range(len(dataset)):
        cloud = dataset.load(i)
        fields = {name for name in ("normals", "colors", "seg") if getattr(cloud, name) is not None}
        if present is None:
            present = fields
        elif fields != present:
            raise DataError(dataset.paths[i], f"has fields {sorted(fields)}, the split's first shape {sorted(present)}")
        xyz = np.asarray(cloud.xyz, dtype=np.float32)
        if raw:
            centre, scale = np.zeros(3, np.float32), 1.0
            parts["xyz"].append(xyz.copy())
        else:
            centre, scale = _normalising(xyz)
            parts["xyz"].append(((xyz.astype(np.float64) - centre) / scale).astype(dtype))
        for name in ("normals", "colors"):
            if name in present:
                parts[name].append(np.asarray(getattr(cloud, name), dtype=dtype))
        if "seg" in present:
            parts["seg"].append(np.asarray(cloud.seg, dtype=np.int64))
        centres.append(centre)
        scales.append(scale)
        offsets.append(offsets[-1] + len(cloud))
        if progress is not None:
            progress()
    if not offsets[-1]:
        raise DataError(dataset.root, "no shapes to bundle")
    arrays = {
        "xyz": np.concatenate(parts["xyz"]),
        "centre": np.stack(centres).astype(np.float32),
        "scale": np.asarray(scales, dtype=np.float32),
        "offsets": np.asarray(offsets, dtype=np.int64),
        "labels": np.asarray(dataset.labels, dtype=np.int64),
    }
    for name in ("normals", "colors"):
        if parts[name]:
            arrays[name] = np.concatenate(parts[name])
    if parts["seg"]:
        seg = np.concatenate(parts["seg"])
        arrays["seg"] = seg.astype(_seg_dtype(seg))
    sample = dataset[0]  # does a sample carry a category (part segmentation)?
    root = os.path.abspath(dataset.root)
    metadata = {
        "format": FORMAT,
        "classes": json.dumps(list(dataset.classes)),
        "paths": json.dumps([os.path.relpath(p, root) if os.path.abspath(p).startswith(root + os.sep) else p
                             for p in dataset.paths]),
        "root": root,
        "up_axis": str(int(dataset.up_axis)),
        "category": "1" if "category" in sample else "0",
        "points_dtype": points_dtype,
    }
    return arrays, metadata


def save_split(dataset: PointDataset, path: str | os.PathLike, points_dtype: str = "fp16", progress: Any = None) -> Path:
    """Write every shape of ``dataset`` (after its cached preparation) to one safetensors file."""
    from safetensors.numpy import save_file

    arrays, metadata = split_arrays(dataset, points_dtype, progress=progress)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path), metadata=metadata)
    return path


class BundledDataset(PointDataset):
    """A split read back from :func:`save_split`'s file; samples as any :class:`PointDataset`.

    ``ds.load(i)`` rebuilds the prepared cloud in float32 (raw units: ``xyz * scale + centre``);
    the per-sample steps then run as for the source dataset. Nothing is cached on disk.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        from safetensors import safe_open

        path = Path(path)
        try:
            with safe_open(str(path), framework="np") as f:
                meta = f.metadata() or {}
                arrays = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # safetensors raises several types for damaged files
            raise DataError(path, f"unreadable bundle split ({type(exc).__name__}: {exc})".splitlines()[0]) from None
        if meta.get("format") != FORMAT:
            raise DataError(path, f"not an appt bundle split (format {meta.get('format')!r}, expected {FORMAT!r})")
        missing = {"xyz", "centre", "scale", "offsets", "labels"} - set(arrays)
        if missing:
            raise DataError(path, f"bundle split lacks arrays {sorted(missing)}")
        self.arrays = arrays
        offsets = arrays["offsets"]
        labels = arrays["labels"]
        if len(offsets) != len(labels) + 1 or int(offsets[-1]) != len(arrays["xyz"]):
            raise DataError(path, f"offsets ({len(offsets)}) do not fit {len(labels)} shapes of {len(arrays['xyz'])} points")
        root = meta["root"]
        paths = json.loads(meta["paths"])
        records = [Record(p if os.path.isabs(p) else os.path.join(root, p), int(lab), row=i)
                   for i, (p, lab) in enumerate(zip(paths, labels))]
        super().__init__(records, json.loads(meta["classes"]), root=root, up_axis=int(meta["up_axis"]))
        self.with_category = meta.get("category") == "1"

    def read(self, rec: Record) -> Cloud:
        """The prepared cloud of ``rec`` in float32 (fresh arrays, safe to modify)."""
        a, i = self.arrays, rec.row
        lo, hi = int(a["offsets"][i]), int(a["offsets"][i + 1])
        xyz = a["xyz"][lo:hi].astype(np.float32) * a["scale"][i] + a["centre"][i]
        extra = {name: a[name][lo:hi].astype(np.float32) for name in ("normals", "colors") if name in a}
        seg = a["seg"][lo:hi].astype(np.int64) if "seg" in a else None
        return Cloud(np.ascontiguousarray(xyz, dtype=np.float32), extra.get("normals"), extra.get("colors"), seg)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = super().__getitem__(i)
        if self.with_category:
            sample["category"] = sample["label"].clone()
        return sample


def split_info(path: str | os.PathLike) -> dict[str, Any]:
    """Shape and point counts of a split file (for the manifest), without reading the arrays."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        offsets = f.get_tensor("offsets")
        meta = f.metadata() or {}
    sizes = np.diff(offsets)
    return {
        "shapes": int(len(sizes)),
        "points_per_shape": int(sizes[0]) if len(sizes) and (sizes == sizes[0]).all() else "varies",
        "points_dtype": meta.get("points_dtype"),
    }


def unit_clouds(path: str | os.PathLike, count: int | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The first ``count`` clouds of a split file on the unit sphere ``(count, N, 3)`` float32, their
    labels ``(count,)`` and the class names (for benchmarks on a node without the readers)."""
    ds = BundledDataset(path)
    n = len(ds) if count is None else min(count, len(ds))
    points = [normalize(ds.read(ds.records[i])).xyz for i in range(n)]
    return torch.from_numpy(np.stack(points)), torch.from_numpy(ds.labels[:n].copy()), ds.classes
