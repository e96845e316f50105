"""Geometric self-ensemble ("×8", as in EDSR, KAIR and SwinIR): run the network on the
flips/rotations of each batch, undo each transform and average.

Gaussian noise and JPEG blocks look the same under all 8 flips/rotations, so the 8 outputs
make different errors that partly cancel: a little more quality for 8× the compute. Two
degradations are not that symmetric, and averaging over transforms that change them costs
quality instead (docs/RESULTS.md §3.5):

- rain falls near-vertically; a quarter turn shows a de-raining net horizontal streaks no
  training image had (Rain100H lost 5 dB with all 8). De-raining averages the 4 transforms
  that keep vertical lines vertical (identity, half turn, both flips).
- camera noise comes through an RGGB mosaic with red at the top-left pixel; only the
  identity and the transpose keep every pixel's colour in the mosaic, and the other six
  cost `denoise-real` 1.3–2.3 dB each (one LIVE1 image). Real-noise denoising averages those 2.

The ensemble wraps any backend (torch, ONNX Runtime, TensorRT) because it only transforms
the batch."""

from __future__ import annotations

import torch

__all__ = ["SelfEnsemble", "dihedral", "ensemble_transforms", "undo_dihedral"]

ALL_TRANSFORMS = tuple(range(8))
UPRIGHT_TRANSFORMS = (0, 2, 4, 6)  # identity, half turn, horizontal flip, vertical flip
MOSAIC_TRANSFORMS = (0, 7)  # identity, transpose: the RGGB mosaic stays in phase
_TASK_TRANSFORMS = {"derain": UPRIGHT_TRANSFORMS, "denoise-real": MOSAIC_TRANSFORMS}


def ensemble_transforms(task: str) -> tuple[int, ...]:
    """The transforms (indices for `dihedral`) whose average suits a model of `task`."""
    return _TASK_TRANSFORMS.get(task, ALL_TRANSFORMS)


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Transform k ∈ [0, 8) of the square's symmetry group on the last two dims:
    k % 4 quarter turns, then a horizontal flip if k ≥ 4."""
    y = torch.rot90(x, k % 4, dims=(-2, -1))
    return y.flip(-1) if k >= 4 else y


def undo_dihedral(y: torch.Tensor, k: int) -> torch.Tensor:
    """The inverse of `dihedral(·, k)`."""
    if k >= 4:
        y = y.flip(-1)
    return torch.rot90(y, -(k % 4), dims=(-2, -1))


class SelfEnsemble:
    """A backend whose output is the mean of `backend` over `transforms` of its input
    (default: all 8; see `ensemble_transforms`).

    A rotation swaps a batch's height and width; tiles are square, and whole images keep
    the network's size multiple on both sides, so every network here takes the swapped shape."""

    def __init__(self, backend, transforms: tuple[int, ...] = ALL_TRANSFORMS):
        if not transforms or any(k not in ALL_TRANSFORMS for k in transforms):
            raise ValueError(f"transforms must be a non-empty subset of 0..7, got {transforms!r}")
        self.backend = backend
        self.transforms = tuple(transforms)
        self.device = getattr(backend, "device", "cpu")

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        total = None
        for k in self.transforms:
            y = undo_dihedral(self.backend(dihedral(batch, k)), k).to(torch.float32)
            total = y if total is None else total.add_(y)  # summed in place: one output held
        return total.div_(len(self.transforms))
