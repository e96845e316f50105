"""restore.runtime.allocator: kept freed memory removes the page faults of repeated forwards.

Each case runs in a fresh interpreter: the malloc setting is process-wide and cannot be undone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")

# Three 24-channel convolutions at 256² allocate and free 6 MB activations, as a network does.
PROBE = textwrap.dedent("""
    import resource, torch
    from restore.runtime.allocator import keep_freed_memory
    applied = keep_freed_memory()
    assert keep_freed_memory() is applied  # later calls report the first
    torch.set_num_threads(1)
    net = torch.nn.Sequential(*[torch.nn.Conv2d(24, 24, 3, padding=1) for _ in range(3)]).eval()
    x = torch.rand(1, 24, 256, 256)
    with torch.inference_mode():
        net(x)
        net(x)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(8):
            net(x)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(applied, faults)
""")


def _probe(**env: str) -> tuple[bool, int]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("RESTORE_MALLOC", "LD_PRELOAD", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", PROBE], env=clean | env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


def test_kept_freed_memory_removes_page_faults():
    applied, faults = _probe()
    default_applied, default_faults = _probe(RESTORE_MALLOC="default")
    assert applied and not default_applied
    # glibc's default re-faults every activation page (≈ 8 forwards × 3 × 1 536 pages) while
    # kept memory faults only once-off, in 2 MB steps (0–2 048 pages seen, whatever the count)
    assert default_faults > 10000
    assert faults < default_faults / 10


def test_user_allocator_choice_is_respected():
    applied, _ = _probe(MALLOC_TRIM_THRESHOLD_="131072")
    assert not applied

