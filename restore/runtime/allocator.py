"""Keep freed activation memory in the process instead of returning it to the kernel.

glibc's malloc serves blocks above its mmap threshold with fresh `mmap`s and trims the heap
top when more than 128 KiB is free. A network's activations (6–50 MB per tensor at 256²) are
allocated and freed at every layer, so each forward pass re-faults every page it touches:
~20 000 minor page faults per 256² forward of a 24-channel two-stage net. Raising both
thresholds lets malloc reuse the freed blocks (0–2 000 faults): DnCNN ran 17 % faster on an
idle machine (our nets within noise) and a T = 2 net 2× faster on a loaded one
(docs/RESULTS.md §3.3). The price is that up to `TRIM_THRESHOLD` of freed memory stays mapped.

The setting is process-wide, so the library never applies it behind a caller's back: the CLI
(and with it the Gradio demo) and the benchmarks call `keep_freed_memory()`; API users may.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_memory"]

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's maximum on 64-bit: larger blocks are always mmapped
TRIM_THRESHOLD = 256 << 20

_applied: bool | None = None


def _user_chose_allocator() -> bool:
    """The user preloads another malloc or tunes glibc's own: leave their choice alone."""
    preload = os.environ.get("LD_PRELOAD", "")
    tuned = any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"))
    return tuned or any(lib in preload for lib in ("tcmalloc", "jemalloc", "mimalloc"))


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds; True if applied (now or by an earlier call).

    A no-op returning False off Linux/glibc (musl has no `mallopt`), when the user chose an
    allocator or glibc tunables, or when RESTORE_MALLOC=default.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if sys.platform != "linux" or os.environ.get("RESTORE_MALLOC") == "default" or _user_chose_allocator():
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # Both are needed: a fixed mmap threshold alone turns off glibc's dynamic adjustment, which
    # would also have raised the trim threshold, and faults more than the default (measured).
    # mallopt returns 1 on success.
    _applied = bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    return _applied
