"""Atomic file writes, shared by model checkpoints and the training engine, and appt's cache folder.

A file is written to a temporary name in its own folder, flushed to disk, then moved over the old
one with ``os.replace`` (atomic on POSIX): a process killed while writing leaves the previous good
file in place, plus a temporary that :data:`TMP_MARK` lets a later run find and delete.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

TMP_MARK = ".tmp-"


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` to fill a temporary file, then atomically move it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        write(tmp)
        fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync(path.parent)


def fsync(path: Path) -> None:
    """Flush a file's (or a folder's) contents to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def default_cache_dir() -> Path:
    """appt's cache root: ``$APPT_CACHE_DIR`` if set, else ``~/.cache/appt`` (prepared clouds,
    unpacked packaged models)."""
    env = os.environ.get("APPT_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "appt"
