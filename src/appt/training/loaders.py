"""Data order that is a function of ``(seed, epoch)`` only, so a resumed run sees the same batches.

The shuffling never touches torch's global RNG (a ``DataLoader`` without a generator would draw
from it on every new iterator, which differs between an uninterrupted and a resumed run).
Accelerate shards these batches across processes; with one process they pass through unchanged.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from appt.data import collate


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


def resolve_workers(setting: int | None, device: torch.device) -> int:
    """``data.num_workers``; ``None`` picks 0 on CPU (workers would take cores from the training
    threads) and, on CUDA, up to 8 per GPU process, so the GPU does not wait on preparing clouds
    (58 ms per ModelNet40 cloud the first epoch)."""
    if setting is not None:
        return setting
    if device.type != "cuda":
        return 0
    return max(1, min(8, (os.cpu_count() or 1) // max(1, torch.cuda.device_count())))


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
        collate_fn=collate,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
    )
