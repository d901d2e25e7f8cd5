"""Data order that is a function of ``(seed, epoch)`` only, so a resumed run sees the same batches.

The shuffling never touches torch's global RNG (a ``DataLoader`` without a generator would draw
from it on every new iterator, which differs between an uninterrupted and a resumed run).
Accelerate shards these batches across processes; with one process they pass through unchanged.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class EpochShuffleSampler(Sampler[int]):
    """A permutation of ``range(n)`` drawn from ``default_rng([seed, epoch])`` (identity if not shuffling)."""

    def __init__(self, n: int, seed: int, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist())

    def __len__(self) -> int:
        return self.n


class IndexSubset(Dataset):
    """A view of ``dataset`` restricted to ``indices`` that forwards ``set_epoch`` and ``classes``."""

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.dataset[self.indices[i]]

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __getattr__(self, name: str) -> Any:  # classes, num_classes, ... of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


def split_indices(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split of ``range(n)`` into (train, held-out) with ``round(n * fraction)`` held out."""
    perm = np.random.default_rng([seed, 7919]).permutation(n)
    k = int(round(n * fraction))
    return sorted(perm[k:].tolist()), sorted(perm[:k].tolist())


def make_loader(dataset: Any, batch_size: int, seed: int, train: bool, num_workers: int = 0) -> DataLoader:
    """Training loaders shuffle per epoch and drop the last partial batch (BatchNorm needs > 1
    sample) when there is at least one full batch; evaluation loaders keep dataset order."""
    sampler = EpochShuffleSampler(len(dataset), seed, shuffle=train)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=train and len(dataset) >= batch_size,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
    )
