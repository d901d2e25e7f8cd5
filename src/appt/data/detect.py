"""Which dataset a path holds, from its layout alone (``appt train --data PATH``).

Why: a user pointing the tool at a folder should not have to know the registry's names. The rules,
in order:

- a ``.csv`` / ``.json`` file: a file list (``filelist``), split column optional;
- a benchmark root, by its marker files: ``modelnet40_shape_names.txt`` (``modelnet40_txt``),
  ``synsetoffset2category.txt`` (``shapenetpart``, part segmentation), ``main_split/`` holding
  ``*_objectdataset*.h5`` (``scanobjectnn``), ``ply_data_train*.h5`` (``modelnet40_h5``);
- otherwise class folders (``folder``): ``<class>/train|test/<files>`` or ``<class>/<files>``.

Everything a user can get wrong (a missing path, one class, an empty class folder, classes laid out
in two ways) is a :class:`~appt.errors.DataError` naming the folder, raised before any file is read.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appt.data.readers import SUPPORTED_FORMATS
from appt.errors import DataError

SPLIT_FOLDERS = ("train", "test")


@dataclass
class DataLayout:
    """What :func:`detect_layout` found. ``counts``: shapes per class over all splits (``None`` for
    benchmark roots, whose files are not listed up front); ``skipped``: files ignored because their
    type is not a point cloud or mesh (README, .DS_Store), with one example."""

    dataset: str
    root: Path
    kind: str
    has_split: bool
    classes: list[str] = field(default_factory=list)
    counts: dict[str, int] | None = None
    task: str = "classification"
    options: dict[str, Any] = field(default_factory=dict)
    skipped: int = 0
    skipped_example: str | None = None

    def describe(self) -> str:
        """One line: where, what layout, the classes and their sizes."""
        if self.counts is None:
            return f"{self.root}: {self.kind}"
        sizes = ", ".join(f"{c} {n}" for c, n in self.counts.items())
        line = f"{self.root}: {self.kind}, {len(self.classes)} classes ({sizes}; {sum(self.counts.values())} files)"
        if self.skipped:
            line += f"; skipped {self.skipped} file(s) of other types, e.g. {self.skipped_example}"
        return line


def detect_layout(path: str | Path) -> DataLayout:
    """The dataset at ``path`` (see module doc); :class:`DataError` naming the path when there is none."""
    root = Path(path).expanduser().absolute()
    if not root.exists():
        raise DataError(root, "not found (give a folder of class sub-folders, a .csv/.json file list, or a benchmark root)")
    if root.is_file():
        if root.suffix.lower() in (".csv", ".json"):
            return _file_list(root)
        raise DataError(root, "is a file; give a folder of class sub-folders, a .csv/.json file list, or a benchmark root")
    benchmark = _benchmark(root)
    return benchmark if benchmark is not None else _class_folders(root)


def _benchmark(root: Path) -> DataLayout | None:
    if (root / "modelnet40_shape_names.txt").is_file():
        return DataLayout("modelnet40_txt", root, "ModelNet40 (modelnet40_normal_resampled)", True)
    if (root / "synsetoffset2category.txt").is_file():
        return DataLayout("shapenetpart", root, "ShapeNetPart (part segmentation)", True, task="part_segmentation")
    if any((root / "main_split").glob("*_objectdataset*.h5")) or any(root.glob("training_objectdataset*.h5")):
        return DataLayout("scanobjectnn", root, "ScanObjectNN h5 files (variant pb_t50_rs; --set data.options.variant=...)", True)
    if any(root.glob("ply_data_train*.h5")):
        return DataLayout("modelnet40_h5", root, "ModelNet40 HDF5 (ply_data_*.h5)", True)
    return None


def _files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(point/mesh files, other files) directly inside ``folder``; hidden files are ignored."""
    entries = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    exts = {e.lower() for e in SUPPORTED_FORMATS}
    return [p for p in entries if p.suffix.lower() in exts], [p for p in entries if p.suffix.lower() not in exts]


def _class_folders(root: Path) -> DataLayout:
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    loose, _ = _files(root)
    if not folders:
        hint = f" but {len(loose)} point files lie directly in it" if loose else ""
        raise DataError(root, f"has no class sub-folders{hint}; put each class's files in a folder named after the class (<class>/*.pcd)")
    split = {d.name: any((d / s).is_dir() for s in SPLIT_FOLDERS) for d in folders}
    has_split = any(split.values())
    if has_split and not all(split.values()):
        odd = next(d for d in folders if not split[d.name])
        raise DataError(odd, "has no train/ and test/ sub-folders while other class folders do; use one layout for every class")
    if len(folders) < 2:
        raise DataError(root, f"has one class folder ({folders[0].name}); training needs at least 2 classes")
    counts: dict[str, int] = {}
    other: list[Path] = []
    wanted = "/".join(sorted({e.lower() for e in SUPPORTED_FORMATS}))
    for d in folders:
        parts = [d / s for s in SPLIT_FOLDERS] if has_split else [d]
        counts[d.name] = 0
        for part in parts:
            if not part.is_dir():
                raise DataError(part, "class split folder not found (every class needs train/ and test/)")
            files, rest = _files(part)
            if not files:
                raise DataError(part, f"class folder holds no point-cloud or mesh files ({wanted})")
            counts[d.name] += len(files)
            other += rest
    kind = "class folders with train/test sub-folders" if has_split else "class folders, no train/test split"
    return DataLayout("folder", root, kind, has_split, [d.name for d in folders], counts,
                      skipped=len(other), skipped_example=other[0].name if other else None)


def _file_list(path: Path) -> DataLayout:
    from appt.data.folders import _infer_classes, _read_list

    rows, listed = _read_list(path)
    if not rows:
        raise DataError(path, "lists no files")
    classes = list(listed or _infer_classes(path, rows))
    if len(classes) < 2:
        raise DataError(path, f"lists one class ({classes[0] if classes else 'none'}); training needs at least 2 classes")
    has_split = any(r.get("split") not in (None, "") for r in rows)
    labels = Counter(str(r.get("label")) for r in rows)
    # labels are names or indices into the class list
    counts = {c: labels[c] + (labels[str(i)] if str(i) != c else 0) for i, c in enumerate(classes)}
    kind = "file list with a split column" if has_split else "file list, no split column"
    return DataLayout("filelist", path, kind, has_split, classes, counts)
