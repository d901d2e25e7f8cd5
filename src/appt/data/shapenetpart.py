"""ShapeNetPart (16 categories, 50 parts) from ``shapenetcore_partanno_segmentation_benchmark_v0_normal``.

The one place for the benchmark's tables (segmentation code imports them from here):
``CATEGORIES`` (16 names, label order), ``SYNSETS`` (name -> synset id), ``PART_RANGES`` (name ->
global part ids), ``NUM_PARTS`` = 50, ``PART_TO_CATEGORY`` (part id -> category index).

Layout: ``synsetoffset2category.txt`` (``Name<TAB>synset`` per line), ``<synset>/<shape>.txt``
rows ``x y z nx ny nz part`` (part = global id 0..49), ``train_test_split/shuffled_{train,val,
test}_file_list.json`` entries ``"shape_data/<synset>/<shape>"``. Samples add ``seg (N,)`` and
``category ()``; ``label`` is the category too. Every part label is checked to belong to its
shape's category. y-up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from appt.data.base import FileDataset, Record
from appt.data.cloud import Cloud
from appt.data.registry import register_dataset
from appt.errors import ConfigError, DataError

_TABLE = (  # name, synset, number of parts (global part ids are consecutive in this order)
    ("Airplane", "02691156", 4), ("Bag", "02773838", 2), ("Cap", "02954340", 2), ("Car", "02958343", 4),
    ("Chair", "03001627", 4), ("Earphone", "03261776", 3), ("Guitar", "03467517", 3), ("Knife", "03624134", 2),
    ("Lamp", "03636649", 4), ("Laptop", "03642806", 2), ("Motorbike", "03790512", 6), ("Mug", "03797390", 2),
    ("Pistol", "03948459", 3), ("Rocket", "04099429", 3), ("Skateboard", "04225987", 3), ("Table", "04379243", 3),
)
CATEGORIES: tuple[str, ...] = tuple(name for name, _, _ in _TABLE)
SYNSETS: dict[str, str] = {name: synset for name, synset, _ in _TABLE}
_starts = np.cumsum([0] + [k for _, _, k in _TABLE])
PART_RANGES: dict[str, tuple[int, ...]] = {
    name: tuple(range(int(_starts[i]), int(_starts[i + 1]))) for i, (name, _, _) in enumerate(_TABLE)
}
NUM_CATEGORIES = len(CATEGORIES)
NUM_PARTS = int(_starts[-1])
PART_TO_CATEGORY: np.ndarray = np.repeat(np.arange(NUM_CATEGORIES), [k for _, _, k in _TABLE])
SPLITS = ("train", "val", "test", "trainval")


class ShapeNetPartDataset(FileDataset):
    """Part-labelled shapes; ``ds[i]`` adds ``seg (N,)`` long and ``category ()`` long."""

    def read(self, rec: Record) -> Cloud:
        cloud = super().read(rec)
        if cloud.seg is None or cloud.normals is None:
            raise DataError(rec.path, "expected 7 columns per row (x y z nx ny nz part)")
        parts = PART_RANGES[CATEGORIES[rec.label]]
        bad = (cloud.seg < parts[0]) | (cloud.seg > parts[-1])
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(rec.path, f"row {i}: part {int(cloud.seg[i])} is not a part of {CATEGORIES[rec.label]} ({parts[0]}..{parts[-1]})")
        return cloud

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = super().__getitem__(i)
        sample["category"] = sample["label"].clone()
        return sample


def read_category_file(path: Path) -> dict[str, str]:
    """``synset -> category name`` from ``synsetoffset2category.txt``, checked against the benchmark table."""
    if not path.is_file():
        raise DataError(path, "not found")
    out = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise DataError(path, f"line {i}: expected 'Name<TAB>synset', got {line!r}")
        name, synset = fields
        if SYNSETS.get(name) != synset:
            raise DataError(path, f"line {i}: {name} {synset} is not one of the 16 ShapeNetPart categories")
        out[synset] = name
    return out


@register_dataset("shapenetpart")
def shapenetpart(root: Path, split: str, *, categories: list[str] | None = None) -> ShapeNetPartDataset:
    """ShapeNetPart ``split`` (train | val | test | trainval), optionally only ``categories`` (names)."""
    if split not in SPLITS:
        raise ConfigError(f"shapenetpart has splits {', '.join(SPLITS)}; got {split!r}")
    unknown = sorted(set(categories or ()) - set(CATEGORIES))
    if unknown:
        raise ConfigError(f"shapenetpart: unknown categories {', '.join(unknown)}; known: {', '.join(CATEGORIES)}")
    synset_names = read_category_file(root / "synsetoffset2category.txt")
    records = []
    for part in ("train", "val") if split == "trainval" else (split,):
        list_file = root / "train_test_split" / f"shuffled_{part}_file_list.json"
        records += _records(root, list_file, synset_names, categories)
    return ShapeNetPartDataset(records, CATEGORIES, root=root, up_axis=1)


def _records(root: Path, list_file: Path, synset_names: dict[str, str], categories: list[str] | None) -> list[Record]:
    if not list_file.is_file():
        raise DataError(list_file, "not found")
    try:
        entries = json.loads(list_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(list_file, f"invalid JSON: {exc}") from None
    if not isinstance(entries, list):
        raise DataError(list_file, "expected a JSON list of 'shape_data/<synset>/<shape>' entries")
    records = []
    for i, entry in enumerate(entries):
        parts = entry.split("/") if isinstance(entry, str) else []
        if len(parts) != 3:
            raise DataError(list_file, f"entry {i}: {entry!r} is not 'shape_data/<synset>/<shape>'")
        synset, shape = parts[1], parts[2]
        if synset not in synset_names:
            raise DataError(list_file, f"entry {i}: synset {synset} is not listed in synsetoffset2category.txt")
        name = synset_names[synset]
        if categories and name not in categories:
            continue
        path = root / synset / f"{shape}.txt"
        if not path.is_file():
            raise DataError(list_file, f"entry {i}: {path} not found")
        records.append(Record(str(path), CATEGORIES.index(name)))
    return records
