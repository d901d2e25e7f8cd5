"""From a raw cloud to the model's ``(N, C)`` input: the steps every dataset shares.

Order (one place, so datasets cannot drift apart):
1. ``fixed``   -- deterministic, expensive, cached: FPS to ``num_points`` when ``sampling="fps"``.
2. ``finish``  -- per sample: random/first-N resampling (or padding, see :mod:`appt.data.resample`),
   centring + unit-sphere scaling if ``normalize``, the user's transforms, then assembly.
Channel layout of ``points``: xyz, then normals (``use_normals``), then RGB in [0, 1]
(``use_colors``), then the height above the lowest point along the gravity axis (``use_height``,
the 4th channel of ScanObjectNN recipes, computed after augmentation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from appt.data.cloud import Cloud
from appt.data.resample import METHODS, resample
from appt.data.transforms import Compose, normalize
from appt.errors import ConfigError, DataError

# The keys of a run config's ``data.options`` that are Preparation settings (the rest go to the layout).
PREP_OPTIONS = ("sampling", "normalize", "use_normals", "use_colors", "use_height")


@dataclass(frozen=True)
class Preparation:
    """Settings shared by the whole dataset; ``channels`` is the resulting C of ``points (N, C)``."""

    num_points: int | None = None
    sampling: str = "fps"
    normalize: bool = True
    use_normals: bool = False
    use_colors: bool = False
    use_height: bool = False

    def __post_init__(self) -> None:
        n = self.num_points
        if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
            raise ConfigError(f"num_points must be a positive integer or None, got {n!r}")
        if self.sampling not in METHODS:
            raise ConfigError(f"sampling must be one of {', '.join(METHODS)}, got {self.sampling!r}")

    @classmethod
    def from_options(cls, num_points: int | None, options: dict) -> Preparation:
        """The preparation a run's ``data.options`` ask for (keys outside :data:`PREP_OPTIONS` ignored)."""
        return cls(num_points, **{k: options[k] for k in PREP_OPTIONS if k in options})

    @property
    def channels(self) -> int:
        return 3 + 3 * self.use_normals + 3 * self.use_colors + int(self.use_height)

    def cache_settings(self) -> dict:
        """The settings that change what :meth:`fixed` returns (part of the cache key)."""
        return {"fps": self.num_points if self.sampling == "fps" else None}

    def fixed(self, cloud: Cloud) -> Cloud:
        """The deterministic, cacheable part: FPS to ``num_points`` (down, or cyclic padding up)."""
        if self.num_points is not None and self.sampling == "fps" and len(cloud) != self.num_points:
            return resample(cloud, int(self.num_points), "fps")
        return cloud

    def finish(self, cloud: Cloud, rng: np.random.Generator, transforms: Compose, path: str) -> dict[str, np.ndarray]:
        """Per-sample steps; returns ``{"points": (N, C) float32}`` plus ``"seg": (N,)`` if present."""
        if self.num_points is not None:
            cloud = resample(cloud, int(self.num_points), self.sampling, rng)
        if self.normalize:
            cloud = normalize(cloud)
        if len(transforms):
            cloud = transforms(cloud, rng)
        return self.assemble(cloud, path)

    def assemble(self, cloud: Cloud, path: str) -> dict[str, np.ndarray]:
        """Stack the requested channels; refuse a request the source cannot satisfy."""
        parts = [cloud.xyz]
        for flag, name in ((self.use_normals, "normals"), (self.use_colors, "colors")):
            if flag:
                arr = getattr(cloud, name)
                if arr is None:
                    raise DataError(path, f"has no {name} (use_{name}=True)")
                parts.append(arr)
        if self.use_height:
            up = cloud.xyz[:, cloud.up_axis : cloud.up_axis + 1]
            parts.append(up - up.min())
        points = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        points = np.ascontiguousarray(points, dtype=np.float32)
        out = {"points": points if points.flags.writeable else points.copy()}
        if cloud.seg is not None:
            out["seg"] = cloud.seg
        return out
