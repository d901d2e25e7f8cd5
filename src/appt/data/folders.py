"""Datasets of individual files: class folders (Princeton ModelNet layout or a user's own) and lists.

Layouts:
- ``root/<class>/{train,test}/<name>.<ext>`` (Princeton ModelNet; ``split`` picks the sub-folder), or
- ``root/<class>/<name>.<ext>`` (no split folders: ``split="train"`` or ``"all"`` take every file;
  use ``val_fraction`` for a validation split; ``"test"`` is refused),
- a CSV or JSON list of ``path, label[, split]`` (paths relative to the list's folder).
Classes are the sorted folder names unless ``classes`` is given (then its order defines labels and
every folder must be one of them). Files with other extensions (README, .DS_Store) are skipped; a
class folder left with no files is an error. ``modelnet_off`` and ``modelnet_points`` are the
Princeton layout restricted to meshes / point files; raw Princeton coordinates are z-up.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from appt.data.base import FileDataset, Record
from appt.data.readers import POINT_FORMATS, SUPPORTED_FORMATS
from appt.data.registry import register_dataset
from appt.errors import ConfigError, DataError

LIST_SPLITS = ("train", "val", "test")


def scan_class_folders(root: Path, split: str, extensions: Sequence[str],
                       classes: Sequence[str] | None = None) -> tuple[list[Record], list[str]]:
    """Records of a class-folder tree for ``split`` (see module doc) and the class names."""
    if not root.is_dir():
        raise DataError(root, "is not a folder")
    folders = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise DataError(root, "has no class sub-folders")
    names = list(classes) if classes is not None else folders
    for folder in folders:
        if folder not in names:
            raise DataError(root / folder, f"folder is not one of the {len(names)} given classes")
    has_split = any((root / f / s).is_dir() for f in folders for s in ("train", "test"))
    if not has_split and split == "test":
        raise DataError(root, "has no train/test sub-folders; use split='train' (with val_fraction) or 'all'")
    if split not in ("train", "test", "all"):
        raise ConfigError(f"class-folder datasets have splits train, test, all; got {split!r} (use val_fraction for a validation split)")
    parts = (["train", "test"] if split == "all" else [split]) if has_split else [""]
    exts = {e.lower() for e in extensions}
    records = []
    for label, name in enumerate(names):
        for part in parts:
            folder = root / name / part
            if not folder.is_dir():
                raise DataError(folder, "class folder not found")
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in exts and p.is_file())
            if not files:
                raise DataError(folder, f"class folder has no {'/'.join(sorted(exts))} files")
            records += [Record(str(p), label) for p in files]
    return records, names


@register_dataset("modelnet_off")
def modelnet_off(root: Path, split: str, *, classes: list[str] | None = None,
                 mesh_points: int = 10_000) -> FileDataset:
    """Princeton ModelNet ``.off`` meshes, ``<class>/{train,test}/<name>.off``; sampled on the surface."""
    records, names = scan_class_folders(root, split, [".off"], classes)
    return FileDataset(records, names, root=root, up_axis=2, mesh_points=mesh_points)


@register_dataset("modelnet_points")
def modelnet_points(root: Path, split: str, *, classes: list[str] | None = None) -> FileDataset:
    """Point files (e.g. ``.pcd``) in the Princeton layout, in raw mesh units (normalised by default)."""
    records, names = scan_class_folders(root, split, POINT_FORMATS, classes)
    return FileDataset(records, names, root=root, up_axis=2)


@register_dataset("folder")
def folder(root: Path, split: str, *, classes: list[str] | None = None, mesh_points: int = 10_000) -> FileDataset:
    """A user's folder of class sub-folders holding any supported point or mesh files (y-up by default)."""
    records, names = scan_class_folders(root, split, SUPPORTED_FORMATS, classes)
    return FileDataset(records, names, root=root, up_axis=1, mesh_points=mesh_points)


@register_dataset("filelist")
def filelist(root: Path, split: str, *, classes: list[str] | None = None, mesh_points: int = 10_000) -> FileDataset:
    """A CSV (``path,label[,split]`` with or without header) or JSON list (``[{"path", "label",
    "split"?}]`` or ``{"classes": [...], "items": [...]}``) of files and labels.

    Labels are class names or integer indices. Without ``classes`` (option or JSON key), names
    give the sorted unique names and integers give ``"0".."max"``. Without a split column,
    ``split="train"``/``"all"`` take every row and ``"test"`` is refused.
    """
    rows, listed_classes = _read_list(root)
    if not rows:
        raise DataError(root, "lists no files")
    names = list(classes or listed_classes or _infer_classes(root, rows))
    index = {n: i for i, n in enumerate(names)}
    has_split = any(r.get("split") not in (None, "") for r in rows)
    if not has_split and split not in ("train", "all"):
        raise DataError(root, f"has no split column; use split='train' (with val_fraction) or 'all', not {split!r}")
    if split not in LIST_SPLITS + ("all", "trainval"):
        raise ConfigError(f"filelist has splits {', '.join(LIST_SPLITS)}, trainval, all; got {split!r}")
    wanted = {"all": LIST_SPLITS, "trainval": ("train", "val")}.get(split, (split,))
    records = []
    for i, row in enumerate(rows, 1):
        where = f"row {i}"
        if has_split:
            if row.get("split") not in LIST_SPLITS:
                raise DataError(root, f"{where}: split {row.get('split')!r} is not one of {', '.join(LIST_SPLITS)}")
            if row["split"] not in wanted:
                continue
        path = row.get("path")
        if not isinstance(path, str) or not path:
            raise DataError(root, f"{where}: no file path")
        full = (root.parent / path) if not Path(path).is_absolute() else Path(path)
        if not full.is_file():
            raise DataError(root, f"{where}: file {path} not found")
        records.append(Record(str(full), _label_index(root, where, row.get("label"), names, index)))
    return FileDataset(records, names, root=root, up_axis=1, mesh_points=mesh_points)


def _read_list(path: Path) -> tuple[list[dict[str, Any]], list[str] | None]:
    """Rows as dicts with ``path``, ``label`` and optional ``split``; plus a JSON class list if any."""
    if not path.is_file():
        raise DataError(path, "file list is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read file list: {exc}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(path, f"invalid JSON: {exc}") from None
        classes = None
        if isinstance(data, dict):
            classes, data = data.get("classes"), data.get("items")
            if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
                raise DataError(path, "'classes' must be a list of names")
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise DataError(path, "expected a list of {path, label[, split]} objects (or {classes, items})")
        return data, classes
    if path.suffix.lower() != ".csv":
        raise DataError(path, "file list must be .csv or .json")
    table = [r for r in csv.reader(text.splitlines()) if any(c.strip() for c in r)]
    if table and "path" in [c.strip().lower() for c in table[0]]:
        header = [c.strip().lower() for c in table[0]]
        if "label" not in header:
            raise DataError(path, "CSV header has no 'label' column")
        return [dict(zip(header, (c.strip() for c in r))) for r in table[1:]], None
    rows = []
    for i, r in enumerate(table, 1):
        if len(r) not in (2, 3):
            raise DataError(path, f"row {i}: expected path,label[,split], got {len(r)} columns")
        rows.append(dict(zip(("path", "label", "split"), (c.strip() for c in r))))
    return rows, None


def _is_int(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and value.strip().lstrip("-").isdigit())


def _infer_classes(path: Path, rows: list[dict[str, Any]]) -> list[str]:
    labels = [r.get("label") for r in rows]
    if all(_is_int(v) for v in labels):
        return [str(i) for i in range(max(int(v) for v in labels) + 1)]
    return sorted({str(v) for v in labels if v is not None and not _is_int(v)})


def _label_index(path: Path, where: str, value: Any, names: list[str], index: dict[str, int]) -> int:
    if isinstance(value, str) and value in index:
        return index[value]
    if _is_int(value) and 0 <= int(value) < len(names):
        return int(value)
    raise DataError(path, f"{where}: label {value!r} is not one of the {len(names)} classes")
