"""Deterministic splits of a training set for bilevel architecture search."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from restore.errors import RestoreError

__all__ = ["split_train_arch_val", "split_two"]


def _shuffled(paths: Sequence[str | os.PathLike], seed: int) -> list[Path]:
    # sort first so the split depends only on the set of files and the seed, not on the
    # order the caller listed them in
    items = sorted({Path(p) for p in paths}, key=str)
    return [items[i] for i in np.random.default_rng(seed).permutation(len(items))]


def split_train_arch_val(
    paths: Sequence[str | os.PathLike], *, val_fraction: float = 0.02, seed: int = 0
) -> tuple[list[Path], list[Path], list[Path]]:
    """IR-NAS split: (train_w, train_a, val), disjoint. `val` holds `val_fraction` of the
    images (at least 1); the rest is halved into weight-training and architecture-
    training sets (train_w gets the extra image when the count is odd). Each part is
    returned in sorted order."""
    if not 0 < val_fraction < 1:
        raise RestoreError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    items = _shuffled(paths, seed)
    if len(items) < 3:
        raise RestoreError(f"need at least 3 images to split into train/arch/val, got {len(items)}")
    n_val = min(max(1, round(len(items) * val_fraction)), len(items) - 2)
    val, rest = items[:n_val], items[n_val:]
    half = (len(rest) + 1) // 2
    return sorted(rest[:half]), sorted(rest[half:]), sorted(val)


def split_two(paths: Sequence[str | os.PathLike], seed: int = 0) -> tuple[list[Path], list[Path]]:
    """MoD-NAS split: two disjoint halves (the first gets the extra image when odd)."""
    items = _shuffled(paths, seed)
    if len(items) < 2:
        raise RestoreError(f"need at least 2 images to split in two, got {len(items)}")
    half = (len(items) + 1) // 2
    return sorted(items[:half]), sorted(items[half:])
