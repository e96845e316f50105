"""Geometric self-ensemble ("×8", as in EDSR, KAIR and SwinIR): run the network on the
flips/rotations of each batch, undo each transform and average.

Gaussian noise and JPEG blocks look the same under all 8 flips/rotations, so the 8 outputs
make different errors that partly cancel: a little more quality for 8× the compute. Rain and
camera noise are alike under fewer, and averaging over transforms that change them costs
quality instead; `ensemble_transforms` gives each task's set (`restore.data.symmetry`).

The ensemble wraps any backend (torch, ONNX Runtime, TensorRT) because it only transforms
the batch."""

from __future__ import annotations

import torch

# the transforms whose average suits a model of a task: those that leave its degradation alike
from restore.data.symmetry import ALL_TRANSFORMS, check_transforms
from restore.data.symmetry import task_transforms as ensemble_transforms

__all__ = ["SelfEnsemble", "dihedral", "ensemble_transforms", "undo_dihedral"]


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
        self.transforms = check_transforms(transforms)
        if not self.transforms:
            raise ValueError("transforms must not be empty")
        self.backend = backend
        self.device = getattr(backend, "device", "cpu")

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        total = None
        for k in self.transforms:
            y = undo_dihedral(self.backend(dihedral(batch, k)), k).to(torch.float32)
            total = y if total is None else total.add_(y)  # summed in place: one output held
        return total.div_(len(self.transforms))
