"""ModelNet40/10 in the field's released layouts: HDF5 (2,048 points) and ``normal_resampled`` txt.

Both releases are y-up and already roughly unit-scaled. The raw Princeton layout of meshes (and of
point files sampled from them) is served by :mod:`appt.data.folders` (``modelnet_off``,
``modelnet_points``), which is z-up.
"""

from __future__ import annotations

import re
from pathlib import Path

from appt.data.base import ArrayDataset, FileDataset, Record
from appt.data.h5 import array_records, load_h5_block
from appt.data.registry import register_dataset
from appt.errors import ConfigError, DataError

MODELNET40_CLASSES = (
    "airplane bathtub bed bench bookshelf bottle bowl car chair cone cup curtain desk door dresser flower_pot "
    "glass_box guitar keyboard lamp laptop mantel monitor night_stand person piano plant radio range_hood sink "
    "sofa stairs stool table tent toilet tv_stand vase wardrobe xbox"
).split()
MODELNET10_CLASSES = "bathtub bed chair desk dresser monitor night_stand sofa table toilet".split()


def read_name_list(path: Path) -> list[str]:
    """Non-empty, stripped lines of a text list (class names, shape ids, file lists)."""
    if not path.is_file():
        raise DataError(path, "not found")
    try:
        return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read list: {exc}") from None


def _check_split(split: str, allowed: tuple[str, ...], name: str) -> None:
    if split not in allowed:
        raise ConfigError(f"{name} has splits {', '.join(allowed)}; got {split!r} (use val_fraction for a validation split)")


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


@register_dataset("modelnet40_h5")
def modelnet40_h5(root: Path, split: str, *, classes: list[str] | None = None) -> ArrayDataset:
    """``modelnet40_ply_hdf5_2048``: ``ply_data_{split}{k}.h5`` (data (M, 2048, 3), label (M, 1)).

    Files come from ``{split}_files.txt`` when present (entries resolved by file name inside
    ``root``), else from the ``ply_data_{split}*.h5`` glob. Class names from ``shape_names.txt``,
    else ``classes``, else the 40 ModelNet40 names. A ``normal`` dataset, if present, gives normals.
    """
    _check_split(split, ("train", "test"), "modelnet40_h5")
    list_file = root / f"{split}_files.txt"
    if list_file.is_file():
        files = []
        for i, entry in enumerate(read_name_list(list_file), 1):
            f = root / Path(entry).name
            if not f.is_file():
                raise DataError(list_file, f"line {i}: {Path(entry).name} not found in {root}")
            files.append(f)
    else:
        files = sorted(root.glob(f"ply_data_{split}*.h5"), key=_natural_key)
    if not files:
        raise DataError(root, f"no {split}_files.txt and no ply_data_{split}*.h5 files")
    names_file = root / "shape_names.txt"
    names = read_name_list(names_file) if names_file.is_file() else list(classes or MODELNET40_CLASSES)
    records, blocks = [], {}
    for f in files:
        block, labels = load_h5_block(f, normals_key="normal")
        blocks[block.file] = block
        records += array_records(block, labels)
    return ArrayDataset(records, names, blocks, root=root, up_axis=1)


@register_dataset("modelnet40_txt")
def modelnet40_txt(root: Path, split: str, *, num_category: int = 40) -> FileDataset:
    """``modelnet40_normal_resampled``: ``<class>/<shape_id>.txt`` rows ``x,y,z,nx,ny,nz`` (10,000 points).

    Shapes from ``modelnet{40|10}_{split}.txt``, class names from ``modelnet{40|10}_shape_names.txt``;
    a shape id's class is its name without the trailing ``_NNNN``.
    """
    _check_split(split, ("train", "test"), "modelnet40_txt")
    if num_category not in (10, 40):
        raise ConfigError(f"modelnet40_txt: num_category must be 10 or 40, got {num_category!r}")
    names_file = root / f"modelnet{num_category}_shape_names.txt"
    list_file = root / f"modelnet{num_category}_{split}.txt"
    names = read_name_list(names_file)
    index = {n: i for i, n in enumerate(names)}
    records = []
    for i, shape_id in enumerate(read_name_list(list_file), 1):
        cls = shape_id.rsplit("_", 1)[0]
        if cls not in index:
            raise DataError(list_file, f"line {i}: {shape_id!r} names class {cls!r}, which is not in {names_file.name}")
        path = root / cls / f"{shape_id}.txt"
        if not path.is_file():
            raise DataError(list_file, f"line {i}: {path} not found")
        records.append(Record(str(path), index[cls]))
    return FileDataset(records, names, root=root, up_axis=1)
