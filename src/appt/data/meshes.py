"""Meshes (``.off``, ``.obj``, ``.stl``) turned into points sampled uniformly on their surface.

Why sample rather than take vertices: mesh vertices cluster where the modeller needed detail
(a chair's carved leg has thousands, its flat seat four), so the field samples the surface with
probability proportional to face area (as ModelNet40's ``normal_resampled`` release did), keeping
each sample's face normal. Parsing is trimesh's; it also copes with the ModelNet ``OFF`` files
whose first line runs into the counts (``OFF490 518 0``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from appt.data.cloud import Cloud, make_cloud, parsing
from appt.errors import DataError

MESH_FORMATS = (".off", ".obj", ".stl")


def read_mesh_points(path: Path, count: int, seed: int) -> Cloud:
    """``count`` area-weighted surface samples ``(count, 3)`` with face normals, drawn with ``seed``.

    Raises :class:`DataError` for an unreadable mesh, one without faces, non-finite vertices or a
    surface of zero area (nothing to sample).
    """
    import trimesh

    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise DataError(path, f"mesh_points must be a positive integer, got {count!r}")
    with parsing(path, "mesh file"):
        loaded = trimesh.load(str(path), process=False)
    if isinstance(loaded, trimesh.PointCloud):  # vertices but no faces
        raise DataError(path, "mesh has no faces (nothing to sample on)")
    mesh = loaded.to_mesh() if isinstance(loaded, trimesh.Scene) and loaded.geometry else loaded
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.vertices) == 0:
        raise DataError(path, "holds no mesh (no vertices)")
    if len(mesh.faces) == 0:
        raise DataError(path, "mesh has no faces (nothing to sample on)")
    if not np.isfinite(mesh.vertices).all():
        raise DataError(path, "mesh has NaN/Inf vertex coordinates")
    if not mesh.area > 0.0:
        raise DataError(path, "mesh surface has zero area (all faces degenerate)")
    with parsing(path, "mesh file"):
        points, faces = trimesh.sample.sample_surface(mesh, int(count), seed=int(seed))
    return make_cloud(path, points, normals=mesh.face_normals[faces])
