"""ModelNet-C corruptions of one point cloud (Ren et al. 2022); the corruption-error scores (mCE)
are in :mod:`appt.evaluation.robustness`.

Why here: robustness is measured by evaluating a trained model on corrupted copies of the test
set. ModelNet-C ships those copies as fixed HDF5 files for ModelNet40; this module re-creates the
seven corruptions for any cloud we can read, so the same protocol runs on every dataset.

Contract of :func:`corrupt`: input ``(N, C)`` with ``C >= 3`` and columns ``0:3`` = xyz, already
centred and scaled to the unit sphere (as ModelNet-C's input); output ``(N', C)`` float32.

Point count (one rule, ModelNet-C's): dropouts *remove* points and additions *append* points, so
``N' != N`` for those four kinds; nothing is resampled back to ``N``. ``N'`` depends only on
``(N, kind, level)`` (see :func:`corrupted_size`), so every cloud of one split corrupted the same
way still batches. The FPS/kNN tokeniser accepts any ``N'`` of at least its group size. At
``N = 1024`` the counts are exactly ModelNet-C's; for other ``N`` they are scaled by ``N / 1024``.

Extra channels: every output point copies channels ``3:`` from one *source* input point (itself;
for added points, the nearest original point, as ModelNet-C's colour rule). When ``C >= 6`` columns
``3:6`` are taken to be normals and follow the linear part of ``rotate`` / ``scale`` (inverse
transpose, renormalised). :func:`corrupt_with_source` also returns the source indices, so per-point
labels (part segmentation) can follow the points.

Severity: levels are 1..5 (ModelNet-C's file suffixes ``_0``..``_4``). Random numbers are drawn
independently of the level (common random numbers): for one seed, a higher level applies the same
random pattern more strongly (jitter noise scaled, rotation angles scaled, dropped/added point sets
grown), so severity sweeps are monotone per cloud, not only on average. One deliberate deviation:
``scale`` draws each axis factor log-uniformly in ``[1/s, s]`` (ModelNet-C: uniformly) so that the
anisotropy grows with ``s`` for a fixed draw.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from appt.errors import ConfigError, DataError

CORRUPTIONS: tuple[str, ...] = (
    "jitter",
    "dropout_global",
    "dropout_local",
    "add_global",
    "add_local",
    "scale",
    "rotate",
)
LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5)
REFERENCE_NUM_POINTS = 1024  # ModelNet-C's cloud size; point counts below are defined at this N

_DROP_RATE = (0.25, 0.375, 0.5, 0.625, 0.75)
_SCALE_LIMIT = (1.6, 1.7, 1.8, 1.9, 2.0)
_JITTER_SIGMA = 0.01  # per level
_ROTATE_LIMIT = math.pi / 6.0  # per-axis angle limit at level 5
_POINTS_PER_LEVEL = {"dropout_local": 100, "add_global": 10, "add_local": 100}  # at N = 1024
_MAX_CLUSTERS = 7  # ModelNet-C draws 1..7 clusters
_LOCAL_SIGMA = (0.075, 0.125)

Rng = np.random.Generator | int
# A corruption kernel: (xyz (N, 3) float64, level, rng) -> (xyz' (N', 3), source (N',), linear map or None)
_Kernel = Callable[[np.ndarray, int, np.random.Generator], tuple[np.ndarray, np.ndarray, np.ndarray | None]]


# ---------------------------------------------------------------------------------------- specs
def check_corruption(kind: str, level: int) -> None:
    """Raise ConfigError unless ``kind`` is in CORRUPTIONS and ``level`` an int in 1..5."""
    if kind not in CORRUPTIONS:
        raise ConfigError(f"corruption: unknown kind {kind!r}; expected one of {', '.join(CORRUPTIONS)}")
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level not in LEVELS:
        raise ConfigError(f"corruption {kind}: level must be an integer 1..5, got {level!r}")


def parse_corruption(spec: str) -> list[tuple[str, int]]:
    """Parse ``"KIND[:LEVEL]"`` specs, comma-separated, into ``[(kind, level), ...]``.

    ``"jitter:3"`` -> one pair; ``"jitter"`` -> levels 1..5; ``"all"`` -> every kind at every level.
    """
    pairs: list[tuple[str, int]] = []
    for item in (part.strip() for part in str(spec).split(",")):
        kind, sep, level_text = item.partition(":")
        kind = kind.strip()
        kinds = CORRUPTIONS if kind == "all" else (kind,)
        if not sep:
            for k in kinds:
                check_corruption(k, LEVELS[0])
                pairs.extend((k, lv) for lv in LEVELS)
            continue
        try:
            level = int(level_text.strip())
        except ValueError:
            raise ConfigError(f"corruption spec {item!r}: level must be an integer 1..5, got {level_text!r}") from None
        for k in kinds:
            check_corruption(k, level)
            pairs.append((k, level))
    return pairs


def corrupted_size(num_points: int, kind: str, level: int) -> int:
    """Number of points ``N'`` that ``corrupt`` returns for a cloud of ``num_points`` points."""
    check_corruption(kind, level)
    n = int(num_points)
    if kind == "dropout_global":
        return max(1, int(n * (1.0 - _DROP_RATE[level - 1])))
    if kind == "dropout_local":
        return n - _level_count(n, kind, level)
    if kind in ("add_global", "add_local"):
        return n + _level_count(n, kind, level)
    return n


def _level_count(n: int, kind: str, level: int) -> int:
    """Points dropped/added at ``level``: ModelNet-C's count at N=1024, scaled by N/1024."""
    count = int(round(_POINTS_PER_LEVEL[kind] * level * n / REFERENCE_NUM_POINTS))
    return min(count, n - 1) if kind == "dropout_local" else count


# -------------------------------------------------------------------------------------- kernels
def _jitter(xyz: np.ndarray, level: int, rng: np.random.Generator):
    noise = rng.standard_normal(xyz.shape)
    return xyz + _JITTER_SIGMA * level * noise, np.arange(len(xyz)), None


def _rotation(angles: np.ndarray) -> np.ndarray:
    """``Rz @ Ry @ Rx`` for Euler angles ``(3,)`` (ModelNet-C's order), applied as ``xyz @ R``."""
    (cx, cy, cz), (sx, sy, sz) = np.cos(angles), np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _rotate(xyz: np.ndarray, level: int, rng: np.random.Generator):
    angles = rng.uniform(-1.0, 1.0, size=3) * _ROTATE_LIMIT * level / len(LEVELS)
    rot = _rotation(angles)
    return xyz @ rot, np.arange(len(xyz)), rot


def _scale(xyz: np.ndarray, level: int, rng: np.random.Generator):
    factors = _SCALE_LIMIT[level - 1] ** rng.uniform(-1.0, 1.0, size=3)
    scaled = xyz * factors
    scaled = scaled - scaled.mean(axis=0)
    radius = float(np.sqrt((scaled**2).sum(axis=1)).max()) or 1.0  # back to the unit sphere
    linear = np.diag(factors) / radius
    return scaled / radius, np.arange(len(xyz)), linear


def _dropout_global(xyz: np.ndarray, level: int, rng: np.random.Generator):
    order = rng.permutation(len(xyz))
    keep = np.sort(order[: corrupted_size(len(xyz), "dropout_global", level)])
    return xyz[keep], keep, None


def _dropout_local(xyz: np.ndarray, level: int, rng: np.random.Generator):
    """Remove 1..7 local clusters, each grown point by point around a random centre point.

    ModelNet-C assigns each dropped point to a random cluster and removes each cluster's size in
    nearest neighbours of a random remaining point. Here the clusters grow slot by slot (slot ``j``
    removes the point nearest to centre ``labels[j]`` not yet removed), so a level's dropped set
    is the first ``count(level)`` slots and contains every lower level's set.
    """
    n = len(xyz)
    num_clusters = int(rng.integers(1, _MAX_CLUSTERS + 1))
    labels = rng.integers(num_clusters, size=_level_count(n, "dropout_local", LEVELS[-1]))
    centres = rng.permutation(n)[np.arange(num_clusters) % n]
    by_distance = [np.argsort(((xyz - xyz[c]) ** 2).sum(axis=1), kind="stable") for c in centres]
    cursor = [0] * num_clusters
    alive = np.ones(n, dtype=bool)
    for label in labels[: _level_count(n, "dropout_local", level)]:
        order = by_distance[label]
        while not alive[order[cursor[label]]]:  # skip points another cluster already took
            cursor[label] += 1
        alive[order[cursor[label]]] = False
    keep = np.flatnonzero(alive)
    return xyz[keep], keep, None


def _inside_unit_ball(points: np.ndarray) -> np.ndarray:
    """ModelNet-C's rule for added points outside the unit ball: ``p / |p|^2`` (radius ``1/|p|``)."""
    sq = (points**2).sum(axis=1, keepdims=True)
    return np.where(sq > 1.0, points / np.maximum(sq, 1e-12), points)


def _add_global(xyz: np.ndarray, level: int, rng: np.random.Generator):
    most = _level_count(len(xyz), "add_global", LEVELS[-1])
    direction = rng.standard_normal((most, 3))
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12)
    radius = rng.uniform(0.0, 1.0, size=(most, 1)) ** (1.0 / 3.0)  # uniform in the unit ball
    added = (direction * radius)[: _level_count(len(xyz), "add_global", level)]
    return _append(xyz, added)


def _add_local(xyz: np.ndarray, level: int, rng: np.random.Generator):
    n = len(xyz)
    most = _level_count(n, "add_local", LEVELS[-1])
    num_clusters = int(rng.integers(1, _MAX_CLUSTERS + 1))
    labels = rng.integers(num_clusters, size=most)
    centres = rng.permutation(n)[np.arange(_MAX_CLUSTERS) % n]
    sigmas = rng.uniform(*_LOCAL_SIGMA, size=_MAX_CLUSTERS)
    noise = rng.standard_normal((most, 3))
    added = _inside_unit_ball(xyz[centres[labels]] + sigmas[labels, None] * noise)
    return _append(xyz, added[: _level_count(n, "add_local", level)])


def _append(xyz: np.ndarray, added: np.ndarray):
    """Original points, then ``added``; each added point's source is its nearest original point."""
    source = np.concatenate([np.arange(len(xyz)), _nearest(added, xyz)])
    return np.concatenate([xyz, added]), source, None


def _nearest(query: np.ndarray, ref: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Index into ``ref (N, 3)`` of the nearest point for each ``query (M, 3)`` row -> ``(M,)``."""
    out = np.empty(len(query), dtype=np.int64)
    ref_sq = (ref**2).sum(axis=1)
    for start in range(0, len(query), chunk):
        q = query[start : start + chunk]
        dist = ref_sq[None, :] - 2.0 * q @ ref.T  # |q|^2 is constant per row
        out[start : start + chunk] = dist.argmin(axis=1)
    return out


_KERNELS: dict[str, _Kernel] = {
    "jitter": _jitter,
    "dropout_global": _dropout_global,
    "dropout_local": _dropout_local,
    "add_global": _add_global,
    "add_local": _add_local,
    "scale": _scale,
    "rotate": _rotate,
}


# ------------------------------------------------------------------------------------ public API
def corrupt_with_source(points: np.ndarray, kind: str, level: int, rng: Rng) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt one cloud and say where each output point came from.

    ``points (N, C)`` -> ``(corrupted (N', C) float32, source (N',) int64)``: output row ``i``
    carries the extra channels (and should carry the label) of input row ``source[i]``.
    ``rng`` is a Generator (consumed) or an int seed. The input array is not modified.
    """
    check_corruption(kind, level)
    cloud = np.asarray(points, dtype=np.float32)
    if cloud.ndim != 2 or cloud.shape[1] < 3 or cloud.shape[0] < 1:
        raise DataError("points", f"expected a (N, C>=3) array with N >= 1, got shape {cloud.shape}")
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    xyz, source, linear = _KERNELS[kind](cloud[:, :3].astype(np.float64), int(level), generator)
    out = np.empty((len(xyz), cloud.shape[1]), dtype=np.float32)
    out[:, :3] = xyz
    out[:, 3:] = cloud[source, 3:]
    if linear is not None and cloud.shape[1] >= 6:
        out[:, 3:6] = _transform_normals(out[:, 3:6], linear)
    return out, source.astype(np.int64)


def corrupt(points: np.ndarray, kind: str, level: int, rng: Rng) -> np.ndarray:
    """Apply ModelNet-C corruption ``kind`` at severity ``level`` (1..5): ``(N, C) -> (N', C)`` float32.

    See the module docstring for the point-count rule (``N'`` from :func:`corrupted_size`) and
    for how extra channels and normals are carried.
    """
    return corrupt_with_source(points, kind, level, rng)[0]


def _transform_normals(normals: np.ndarray, linear: np.ndarray) -> np.ndarray:
    """Normals under ``xyz @ linear``: ``n @ inv(linear).T``, renormalised (zero normals stay zero)."""
    moved = normals.astype(np.float64) @ np.linalg.inv(linear).T
    norm = np.linalg.norm(moved, axis=1, keepdims=True)
    return np.where(norm > 0, moved / np.where(norm > 0, norm, 1.0), 0.0)
