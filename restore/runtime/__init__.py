"""Inference runtime: tiling, backends and profiling (see docs/ARCHITECTURE.md)."""

from __future__ import annotations

from restore.runtime.backends import Backend, TorchBackend, resolve_device
from restore.runtime.profile import (
    LatencyStats,
    ModelProfile,
    count_flops,
    count_parameters,
    flops_per_megapixel,
    measure_latency,
    profile_module,
)
from restore.runtime.tiling import TileConfig, count_tiles, restore_tensor

__all__ = [
    "Backend",
    "LatencyStats",
    "ModelProfile",
    "TileConfig",
    "TorchBackend",
    "count_flops",
    "count_parameters",
    "count_tiles",
    "flops_per_megapixel",
    "measure_latency",
    "profile_module",
    "resolve_device",
    "restore_tensor",
]
