"""Which of the 8 flips/rotations of the square leave a degradation looking alike.

Index k ∈ [0, 8) means k % 4 quarter turns, then a horizontal flip if k ≥ 4 (as
`restore.runtime.ensemble.dihedral` applies it). Both the test-time self-ensemble and the
augmentation of real training pairs may only use transforms that keep the degradation what
the network was trained on (docs/RESULTS.md §3.5):

- Gaussian noise and JPEG's 8×8 blocks are alike under all 8;
- rain falls near-vertically: only the identity, the half turn and both flips keep it so
  (a quarter turn shows horizontal streaks; Rain100H lost 5 dB with all 8 averaged);
- camera noise comes through an RGGB mosaic with red at the top-left pixel: only the
  identity and the transpose keep every pixel's colour in phase.

Synthetic training patches are transformed before they are degraded, so they may use all 8.
"""

from __future__ import annotations

__all__ = ["ALL_TRANSFORMS", "MOSAIC_TRANSFORMS", "UPRIGHT_TRANSFORMS", "check_transforms", "task_transforms"]

ALL_TRANSFORMS = tuple(range(8))
UPRIGHT_TRANSFORMS = (0, 2, 4, 6)  # identity, half turn, horizontal flip, vertical flip
MOSAIC_TRANSFORMS = (0, 7)  # identity, transpose: the RGGB mosaic stays in phase
_TASK_TRANSFORMS = {"derain": UPRIGHT_TRANSFORMS, "denoise-real": MOSAIC_TRANSFORMS}


def task_transforms(task: str) -> tuple[int, ...]:
    """The transforms that leave the degradation of `task` (a zoo task name) alike."""
    return _TASK_TRANSFORMS.get(task, ALL_TRANSFORMS)


def check_transforms(transforms) -> tuple[int, ...]:
    """`transforms` as a tuple of indices, or ValueError if it is not a subset of 0..7."""
    if isinstance(transforms, bool) or not all(isinstance(k, int) and k in ALL_TRANSFORMS for k in transforms):
        raise ValueError(f"transforms must be indices in 0..7, got {transforms!r}")
    return tuple(transforms)
