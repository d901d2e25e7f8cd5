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


PER_CLASS = "/class"


def stratified_subset(labels: np.ndarray, size: int | float | str, seed: int) -> np.ndarray:
    """Positions of a per-class proportional subset of ``size`` shapes (or that fraction if float),
    or of ``K`` shapes of every class when ``size`` is the string ``"K/class"`` (few-shot budgets).

    Class quotas are ``n_c * size / n`` rounded by largest remainder, so they sum to ``size``.
    """
    labels = np.asarray(labels)
    if isinstance(size, str):
        return per_class_subset(labels, _shots(size), seed)
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


def _shots(size: str) -> int:
    """``"K/class"`` -> ``K`` (a positive integer), else ConfigError."""
    count = size[: -len(PER_CLASS)] if size.endswith(PER_CLASS) else ""
    if not count.isdigit() or int(count) < 1:
        raise ConfigError(f"subset must be a count, a fraction or 'K{PER_CLASS}' (e.g. '10{PER_CLASS}'), got {size!r}")
    return int(count)


def per_class_subset(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Positions of ``shots`` seeded shapes of every class (ascending); a class with fewer is an error,
    not a silently smaller budget."""
    groups = _by_class(labels)
    for c, group in zip(np.unique(labels), groups):
        if len(group) < shots:
            raise ConfigError(f"subset={shots}{PER_CLASS}: class {c} has only {len(group)} shapes in this split")
    rng = np.random.default_rng([seed, 2])
    return np.sort(np.concatenate([rng.choice(g, size=shots, replace=False) for g in groups]))


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
