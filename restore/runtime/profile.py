"""Model cost: parameter count, FLOPs and latency.

FLOPs are whatever `torch.utils.flop_counter.FlopCounterMode` counts: 2 per
multiply-accumulate of convolutions and matmuls; elementwise ops, bias additions,
normalisation and custom ops without a registered formula (e.g. ``restore::deform_conv2d``
unless `restore.models.dcn` registers one) count as 0.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "LatencyStats",
    "ModelProfile",
    "count_flops",
    "count_parameters",
    "flops_per_megapixel",
    "measure_latency",
    "profile_module",
]


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters())


def _module_device(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def count_flops(module: nn.Module, example_input: torch.Tensor) -> int:
    """FLOPs (2 per MAC) of one forward pass on `example_input`."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(example_input)
    return int(counter.get_total_flops())


def flops_per_megapixel(module: nn.Module, channels: int, size: int = 256) -> float:
    """FLOPs per output megapixel, measured on a size×size input (rounded up to the
    module's `size_multiple`). Exact for fully convolutional nets, up to border effects."""
    m = int(getattr(module, "size_multiple", 1))
    size = -(-size // m) * m
    x = torch.zeros(1, channels, size, size, device=_module_device(module))
    return count_flops(module, x) * 1e6 / (size * size)


@dataclass
class LatencyStats:
    median_ms: float
    mean_ms: float
    min_ms: float
    repeats: int
    megapixels_per_s: float  # from the median: N·H·W of the input per second


def measure_latency(
    fn: Callable[[torch.Tensor], object], x: torch.Tensor, *, warmup: int = 2, repeats: int = 5
) -> LatencyStats:
    """Time `fn(x)` under inference mode; CUDA inputs are timed with CUDA events."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    timer = _cuda_time_ms if x.is_cuda else _wall_time_ms
    with torch.inference_mode():
        for _ in range(warmup):
            fn(x)
        times = [timer(fn, x) for _ in range(repeats)]
    median = statistics.median(times)
    mp = x.shape[0] * x.shape[-2] * x.shape[-1] / 1e6
    return LatencyStats(
        median_ms=median,
        mean_ms=statistics.fmean(times),
        min_ms=min(times),
        repeats=repeats,
        megapixels_per_s=mp / (median / 1e3) if median > 0 else float("inf"),
    )


def _wall_time_ms(fn, x) -> float:
    start = time.perf_counter()
    fn(x)
    return (time.perf_counter() - start) * 1e3


def _cuda_time_ms(fn, x) -> float:
    # kernels run asynchronously: wall clock would time only the launch
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize(x.device)
    start.record()
    fn(x)
    end.record()
    torch.cuda.synchronize(x.device)
    return start.elapsed_time(end)


@dataclass
class ModelProfile:
    params: int
    flops_per_mp: float


def profile_module(module: nn.Module, in_channels: int, size: int = 256) -> ModelProfile:
    return ModelProfile(
        params=count_parameters(module),
        flops_per_mp=flops_per_megapixel(module, in_channels, size),
    )
