"""Seeded, per-class (stratified) subsets and validation hold-outs of a labelled set.

Why stratified: a 1,000-shape subset of ModelNet10 drawn blindly can leave bathtub with a handful
of shapes; drawing the same fraction from every class keeps the class mix of the full set, so
small-budget results stay comparable. Both functions return positions in ascending order (the
dataset's own order is kept) and depend only on ``(labels, size, seed)``.
"""

from __future__ import annotations

import numpy as np

from appt.errors import ConfigError


def _by_class(labels: np.ndarray) -> list[np.ndarray]:
    return [np.flatnonzero(labels == c) for c in np.unique(labels)]


def stratified_subset(labels: np.ndarray, size: int | float, seed: int) -> np.ndarray:
    """Positions of a per-class proportional subset of ``size`` shapes (or that fraction if float).

    Class quotas are ``n_c * size / n`` rounded by largest remainder, so they sum to ``size``.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if isinstance(size, bool) or not isinstance(size, (int, float, np.integer, np.floating)):
        raise ConfigError(f"subset must be a count or a fraction, got {size!r}")
    if isinstance(size, (float, np.floating)):
        if not 0.0 < size <= 1.0:
            raise ConfigError(f"subset as a fraction must be in (0, 1], got {size}")
        size = max(1, int(round(size * n)))
    if not 1 <= size <= n:
        raise ConfigError(f"subset={size} must be between 1 and the {n} shapes of this split")
    groups = _by_class(labels)
    exact = np.array([len(g) for g in groups], dtype=np.float64) * size / n
    quota = np.floor(exact).astype(int)
    remainder_order = np.argsort(-(exact - quota), kind="stable")
    quota[remainder_order[: size - quota.sum()]] += 1
    rng = np.random.default_rng([seed, 2])
    chosen = [rng.choice(g, size=q, replace=False) for g, q in zip(groups, quota)]
    return np.sort(np.concatenate(chosen))


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, val)`` positions: ``round(n_c * fraction)`` of each class held out for validation.

    Rule: a class with at least 2 shapes keeps at least 1 in each part; a class with 1 shape
    stays in train.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {fraction!r}")
    rng = np.random.default_rng([seed, 1])
    train, val = [], []
    for group in _by_class(np.asarray(labels)):
        k = 0 if len(group) < 2 else min(max(int(round(len(group) * fraction)), 1), len(group) - 1)
        perm = rng.permutation(group)
        val.append(perm[:k])
        train.append(perm[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
