"""ScanObjectNN (real scans, 15 classes) from the official ``h5_files`` release, three variants.

| variant     | folder            | train / test files                                              |
|-------------|-------------------|-----------------------------------------------------------------|
| ``obj_bg``    | ``main_split``      | ``training_objectdataset.h5`` / ``test_objectdataset.h5``           |
| ``obj_only``  | ``main_split_nobg`` | ``training_objectdataset.h5`` / ``test_objectdataset.h5``           |
| ``pb_t50_rs`` | ``main_split``      | ``training_objectdataset_augmentedrot_scale75.h5`` / ``test_...``   |

Each file holds ``data (M, 2048, 3)`` float32, ``label (M,)`` and a background ``mask``. ``root``
is the ``h5_files`` folder (holding ``main_split/`` ...) or the variant's own folder; since
OBJ_BG and OBJ_ONLY use the same file names, the folder name is checked, so a ``main_split``
root never silently serves OBJ_BG when OBJ_ONLY was asked for. The gravity axis is y (the
4th "height" channel of the usual recipe is ``use_height=True``).
"""

from __future__ import annotations

from pathlib import Path

from appt.data.base import ArrayDataset
from appt.data.h5 import array_records, load_h5_block
from appt.data.registry import register_dataset
from appt.errors import ConfigError, DataError

SCANOBJECTNN_CLASSES = (
    "bag bin box cabinet chair desk display door shelf table bed pillow sink sofa toilet"
).split()
VARIANTS = {
    "obj_bg": ("main_split", ""),
    "obj_only": ("main_split_nobg", ""),
    "pb_t50_rs": ("main_split", "_augmentedrot_scale75"),
}


def scanobjectnn_file(root: Path, variant: str, split: str) -> Path:
    """The h5 file of ``variant`` and ``split`` under ``root`` (see module doc)."""
    if variant not in VARIANTS:
        raise ConfigError(f"scanobjectnn: variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    if split not in ("train", "test"):
        raise ConfigError(f"scanobjectnn has splits train, test; got {split!r} (use val_fraction for a validation split)")
    folder, suffix = VARIANTS[variant]
    name = f"{'training' if split == 'train' else 'test'}_objectdataset{suffix}.h5"
    if (root / folder / name).is_file():
        return root / folder / name
    if root.name == folder and (root / name).is_file():
        return root / name
    raise DataError(root / folder / name, f"not found (ScanObjectNN {variant}, {split})")


@register_dataset("scanobjectnn")
def scanobjectnn(root: Path, split: str, *, variant: str = "pb_t50_rs") -> ArrayDataset:
    """ScanObjectNN ``variant`` (obj_bg | obj_only | pb_t50_rs), official train/test split, 15 classes."""
    path = scanobjectnn_file(root, variant, split)
    block, labels = load_h5_block(path)
    return ArrayDataset(array_records(block, labels), SCANOBJECTNN_CLASSES, {block.file: block}, root=root, up_axis=1)
