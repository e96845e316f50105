"""Geometric self-ensemble ("×8", as in EDSR, KAIR and SwinIR): run the network on the 8
flips/rotations of each batch, undo each transform and average.

Noise, rain and block artifacts have no preferred orientation, so the 8 outputs make
different errors that partly cancel: a little more quality for 8× the compute. It wraps
any backend (torch, ONNX Runtime, TensorRT) because it only transforms the batch.
"""

from __future__ import annotations

import torch

__all__ = ["SelfEnsemble", "dihedral", "undo_dihedral"]

TRANSFORMS = 8


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
    """A backend whose output is the mean of `backend` over the 8 transforms of its input.

    A rotation swaps a batch's height and width; tiles are square, and whole images keep
    the network's size multiple on both sides, so every network here takes the swapped shape."""

    def __init__(self, backend):
        self.backend = backend
        self.device = getattr(backend, "device", "cpu")

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        total = None
        for k in range(TRANSFORMS):
            y = undo_dihedral(self.backend(dihedral(batch, k)), k).to(torch.float32)
            total = y if total is None else total.add_(y)  # summed in place: one output held
        return total.div_(TRANSFORMS)
