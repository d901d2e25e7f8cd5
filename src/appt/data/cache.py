"""On-disk cache of prepared clouds, so mesh sampling, text parsing and FPS happen once.

Key: the source file (resolved path, size, modification time in ns) plus every setting that
changes the result (points sampled on a mesh and their seed, FPS target, a format version). An
edited source file, or other settings, get a new key; nothing stale is returned. Entries are one
file each holding xyz and whichever of normals/colors/seg exist, written to a temporary name and
renamed, so concurrent loader workers never see half a file. An entry that
cannot be read is recomputed and rewritten. Format of an entry (``.cloud``): a one-line JSON
header (point count and fields) followed by each field's raw little-endian array; reading it is a
single ``read`` plus ``np.frombuffer`` views (about 20 us), several times faster than ``np.load``,
whose header parsing dominates for 1,024-point clouds.

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
from appt.fileio import default_cache_dir

CACHE_VERSION = 2
_FIELDS = {"xyz": ("<f4", 3), "normals": ("<f4", 3), "colors": ("<f4", 3), "seg": ("<i8", 1)}
_MAGIC = b"APPTCLOUD1 "


def file_identity(path: str | os.PathLike) -> list:
    """What identifies a source file's content cheaply: resolved path, size, mtime (ns)."""
    p = os.path.abspath(path)
    st = os.stat(p)
    return [p, st.st_size, st.st_mtime_ns]


class DiskCache:
    """A folder of prepared clouds addressed by :meth:`key`."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def key(self, *parts: object) -> str:
        """Hex digest of JSON-serialisable ``parts`` (order matters, dict keys do not)."""
        blob = json.dumps([CACHE_VERSION, *parts], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _file(self, key: str) -> Path:
        return self.root / "clouds" / key[:2] / f"{key}.cloud"

    def contains(self, key: str) -> bool:
        """Whether an entry for ``key`` exists (one ``stat``; its content is checked when read)."""
        return self._file(key).is_file()

    def get(self, key: str) -> Cloud | None:
        """The cached cloud, or ``None`` when absent or unreadable."""
        try:
            with open(self._file(key), "rb") as fh:
                blob = bytearray(fh.read())  # writable, so arrays can be handed to torch as they are
            end = blob.index(b"\n")
            if not blob.startswith(_MAGIC):
                return None
            header = json.loads(blob[len(_MAGIC) : end])
            n, offset, fields = int(header["n"]), end + 1, {}
            for name in header["fields"]:
                dtype, width = _FIELDS[name]
                count = n * width
                arr = np.frombuffer(blob, dtype=dtype, count=count, offset=offset)
                fields[name] = arr.reshape(n, 3) if width == 3 else arr
                offset += arr.nbytes
            if offset != len(blob):
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return Cloud(fields["xyz"], fields.get("normals"), fields.get("colors"), fields.get("seg"))

    def put(self, key: str, cloud: Cloud) -> None:
        """Store ``cloud`` atomically (write to a temporary name, then rename)."""
        names = [name for name in _FIELDS if getattr(cloud, name) is not None]
        header = json.dumps({"n": len(cloud), "fields": names}).encode()
        target = self._file(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.stem}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(_MAGIC + header + b"\n")
            for name in names:
                fh.write(np.ascontiguousarray(getattr(cloud, name), dtype=_FIELDS[name][0]).tobytes())
        os.replace(tmp, target)

    def get_or_compute(self, key: str, compute: Callable[[], Cloud]) -> Cloud:
        """The cached cloud for ``key``; on a miss, ``compute()`` it and store it."""
        cloud = self.get(key)
        if cloud is None:
            cloud = compute()
            self.put(key, cloud)
        return cloud
