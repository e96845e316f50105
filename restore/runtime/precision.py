"""Numeric precision of the torch networks: float32, or bfloat16 autocast.

Under bf16 autocast the convolutions run in bfloat16 (accumulating in float32 in oneDNN)
and the activations between them are bfloat16 too, which halves the memory traffic; the
weights stay float32, and so do the optimizer and the loss in training. On a CPU that
computes bf16 natively (AVX512-BF16 or AMX) that runs these nets 1.8–2.5× faster, for
inference and for training (docs/RESULTS.md §3.3). `auto` takes bf16 only where the device
has native bf16; elsewhere it keeps float32. Quality: `denoise-gray` on Set12 σ = 25 moved
by 0.003 dB, and no output pixel by more than 2/255 (tests/test_precision.py).
"""

from __future__ import annotations

import contextlib

import torch

from restore.errors import RestoreError

__all__ = ["PRECISIONS", "autocast", "native_bf16", "resolve_precision"]

PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: str = "cpu") -> bool:
    """Whether `device` computes bfloat16 natively (else bf16 is emulated and slow)."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    # private probes of torch.cpu; a torch without them gets float32, the safe choice
    probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(probe is not None and probe() for probe in probes)


def resolve_precision(name: str, device: str = "cpu") -> str:
    """"fp32" or "bf16" for a user's choice among PRECISIONS (auto: bf16 where native)."""
    if name not in PRECISIONS:
        raise RestoreError(f"unknown precision {name!r}: use one of {', '.join(PRECISIONS)}")
    if name == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return name


def autocast(precision: str, device: str = "cpu") -> contextlib.AbstractContextManager:
    """The context that runs a forward pass at `precision` ("fp32" or "bf16") on `device`."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise RestoreError(f"precision must be resolved to fp32 or bf16, got {precision!r}")
    return torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)
