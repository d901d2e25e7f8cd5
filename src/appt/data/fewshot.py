"""Few-shot ModelNet40 episodes: N-way K-shot support (``train``) and query (``test``) sets.

Two sources:
- the field's 10 fixed folds (Point-BERT's release, used by every paper since):
  ``root/{way}way_{shot}shot/{fold}.pkl``, a dict ``{"train": [...], "test": [...]}`` of
  ``(points (N, C), label, name)`` tuples with labels ``0..way-1``. Unpickling is restricted to
  NumPy arrays and plain containers, so a pickle cannot run code.
- otherwise episodes generated from a ModelNet40 layout in ``root`` (``normal_resampled`` txt or
  HDF5): ``way`` classes drawn among those with at least ``shot`` train and ``query`` test shapes,
  ``shot`` support shapes per class from train and ``query`` (20, as in the released folds) from
  test. The draw depends only on ``(fold_seed, way, shot, fold)``, never on the training seed,
  so the episode is the same task in every run. Episode labels are ``0..way-1`` in class order.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from appt.data.base import ArrayBlock, ArrayDataset, PointDataset, Record
from appt.data.cloud import as_label_array, parsing
from appt.data.modelnet import modelnet40_h5, modelnet40_txt
from appt.data.registry import register_dataset
from appt.errors import ConfigError, DataError

_SAFE_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only NumPy arrays, scalars and builtin containers (no arbitrary code)."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _SAFE_GLOBALS or (module.startswith("numpy") and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def load_fold_pickle(path: Path) -> dict:
    """The ``{"train": [...], "test": [...]}`` dict of a released fold file."""
    with parsing(path, "fold pickle"), open(path, "rb") as fh:
        data = _ArrayUnpickler(io.BytesIO(fh.read())).load()
    if not isinstance(data, dict) or not {"train", "test"} <= set(data):
        raise DataError(path, "expected a dict with 'train' and 'test' lists")
    return data


def _from_pickle(path: Path, split: str, way: int) -> ArrayDataset:
    entries = load_fold_pickle(path)[split]
    if not isinstance(entries, (list, tuple)) or not entries:
        raise DataError(path, f"'{split}' must be a non-empty list of (points, label, name) tuples")
    source = f"{path}#{split}"
    clouds, records, names = [], [], {}
    for i, entry in enumerate(entries):
        where = f"{path}[{split}][{i}]"
        if not isinstance(entry, (tuple, list)) or len(entry) < 2 or not isinstance(entry[0], np.ndarray):
            raise DataError(where, "expected a (points array, label[, name]) tuple")
        raw = np.asarray(entry[1])
        if raw.size != 1:
            raise DataError(where, f"label must be one integer, got shape {raw.shape}")
        label = int(as_label_array(where, raw.reshape(1), "label")[0])
        if not 0 <= label < way:
            raise DataError(where, f"label {entry[1]!r} is outside 0..{way - 1} of a {way}-way episode")
        if len(entry) > 2 and isinstance(entry[2], str):
            names.setdefault(label, entry[2])
        clouds.append(entry[0])
        records.append(Record(where, label, i, source))
    classes = [names.get(k, str(k)) for k in range(way)]
    return ArrayDataset(records, classes, {source: ArrayBlock(str(path), clouds)}, root=path.parent, up_axis=1)


def _base_split(root: Path, split: str) -> PointDataset:
    if (root / "modelnet40_shape_names.txt").is_file():
        return modelnet40_txt(root, split)
    if any(root.glob("ply_data_*.h5")) or (root / "train_files.txt").is_file():
        return modelnet40_h5(root, split)
    raise DataError(root, "holds neither released fold pickles ({way}way_{shot}shot/{fold}.pkl) nor a ModelNet40 "
                          "layout (modelnet40_shape_names.txt or ply_data_*.h5) to generate episodes from")


def _generated(root: Path, split: str, way: int, shot: int, fold: int, query: int, fold_seed: int) -> PointDataset:
    train, test = _base_split(root, "train"), _base_split(root, "test")
    n_classes = train.num_classes
    train_count = np.bincount(train.labels, minlength=n_classes)
    test_count = np.bincount(test.labels, minlength=n_classes)
    eligible = np.flatnonzero((train_count >= shot) & (test_count >= query))
    if len(eligible) < way:
        raise DataError(root, f"only {len(eligible)} classes have >= {shot} train and >= {query} test shapes; "
                              f"a {way}-way episode needs {way}")
    rng = np.random.default_rng([fold_seed, way, shot, fold])
    chosen = np.sort(rng.choice(eligible, size=way, replace=False))
    picks = {"train": [], "test": []}
    for new_label, c in enumerate(chosen):
        picks["train"].append(rng.choice(np.flatnonzero(train.labels == c), size=shot, replace=False))
        picks["test"].append(rng.choice(np.flatnonzero(test.labels == c), size=query, replace=False))
    base = train if split == "train" else test
    positions = np.concatenate(picks[split])
    labels = np.repeat(np.arange(way), shot if split == "train" else query)
    return base.select(positions, labels, [train.classes[c] for c in chosen])


@register_dataset("fewshot_modelnet40")
def fewshot_modelnet40(root: Path, split: str, *, way: int = 5, shot: int = 10, fold: int = 0,
                       query: int = 20, fold_seed: int = 0) -> PointDataset:
    """The ``fold``-th ``way``-way ``shot``-shot episode: ``train`` = support, ``test`` = query."""
    if split not in ("train", "test"):
        raise ConfigError(f"fewshot_modelnet40 has splits train (support), test (query); got {split!r}")
    for key, value in (("way", way), ("shot", shot), ("query", query)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"fewshot_modelnet40: {key} must be a positive integer, got {value!r}")
    if isinstance(fold, bool) or not isinstance(fold, int) or fold < 0:
        raise ConfigError(f"fewshot_modelnet40: fold must be a non-negative integer, got {fold!r}")
    pkl = root / f"{way}way_{shot}shot" / f"{fold}.pkl"
    if pkl.is_file():
        return _from_pickle(pkl, split, way)
    return _generated(root, split, way, shot, fold, query, fold_seed)
