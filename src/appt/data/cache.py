"""On-disk cache of prepared clouds, so mesh sampling, text parsing and FPS happen once.

Key: the source file (resolved path, size, modification time in ns) plus every setting that
changes the result (points sampled on a mesh and their seed, FPS target, a format version). An
edited source file, or other settings, get a new key; nothing stale is returned. Entries are one
``.npy`` each (a structured array holding xyz and whichever of normals/colors/seg exist), written
to a temporary name and renamed, so concurrent loader workers never see half a file. An entry that
cannot be read is recomputed and rewritten.

Location: ``cache_dir`` argument, else ``$APPT_CACHE_DIR``, else ``~/.cache/appt``.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from appt.data.cloud import Cloud

CACHE_VERSION = 1
_FIELDS = (("xyz", "<f4", (3,)), ("normals", "<f4", (3,)), ("colors", "<f4", (3,)), ("seg", "<i8", ()))


def default_cache_dir() -> Path:
    """``$APPT_CACHE_DIR`` if set, else ``~/.cache/appt``."""
    env = os.environ.get("APPT_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "appt"


def file_identity(path: str | os.PathLike) -> list:
    """What identifies a source file's content cheaply: resolved path, size, mtime (ns)."""
    p = Path(path).resolve()
    st = p.stat()
    return [str(p), st.st_size, st.st_mtime_ns]


class DiskCache:
    """A folder of prepared clouds addressed by :meth:`key`."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def key(self, *parts: object) -> str:
        """Hex digest of JSON-serialisable ``parts`` (order matters, dict keys do not)."""
        blob = json.dumps([CACHE_VERSION, *parts], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _file(self, key: str) -> Path:
        return self.root / "clouds" / key[:2] / f"{key}.npy"

    def get(self, key: str) -> Cloud | None:
        """The cached cloud, or ``None`` when absent or unreadable."""
        try:
            rec = np.load(self._file(key), allow_pickle=False)
        except (OSError, ValueError):
            return None
        names = rec.dtype.names or ()
        if "xyz" not in names:
            return None
        fields = {n: np.ascontiguousarray(rec[n]) for n in names}
        return Cloud(fields["xyz"], fields.get("normals"), fields.get("colors"), fields.get("seg"))

    def put(self, key: str, cloud: Cloud) -> None:
        """Store ``cloud`` atomically (write to a temporary name, then rename)."""
        present = [f for f in _FIELDS if getattr(cloud, f[0]) is not None]
        rec = np.empty(len(cloud), dtype=present)
        for name, _, _ in present:
            rec[name] = getattr(cloud, name)
        target = self._file(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.stem}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, rec, allow_pickle=False)
        os.replace(tmp, target)

    def get_or_compute(self, key: str, compute: Callable[[], Cloud]) -> Cloud:
        """The cached cloud for ``key``; on a miss, ``compute()`` it and store it."""
        cloud = self.get(key)
        if cloud is None:
            cloud = compute()
            self.put(key, cloud)
        return cloud
