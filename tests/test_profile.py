from __future__ import annotations

import pytest
import torch
from torch import nn

from restore.runtime.profile import (
    LatencyStats,
    ModelProfile,
    count_flops,
    count_parameters,
    flops_per_megapixel,
    measure_latency,
    profile_module,
)


def test_count_parameters():
    assert count_parameters(nn.Conv2d(3, 8, 3)) == 3 * 8 * 9 + 8 == 224
    shared = nn.Conv2d(1, 1, 3)
    assert count_parameters(nn.Sequential(shared, shared)) == 10  # shared weights once
    assert count_parameters(nn.Identity()) == 0


def test_count_flops_is_two_per_mac():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    macs = 8 * 3 * 9 * 32 * 40  # out_ch · in_ch · k² · H · W
    assert count_flops(conv, torch.zeros(2, 3, 32, 40)) == 2 * 2 * macs


def test_flops_per_megapixel_rounds_to_size_multiple():
    class Net(nn.Module):
        size_multiple = 8

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)

        def forward(self, x):
            assert x.shape[-1] % 8 == 0
            return self.conv(x)

    per_mp = flops_per_megapixel(Net(), channels=1, size=30)
    assert per_mp == pytest.approx(2 * 4 * 9 * 1e6)  # conv FLOPs scale with pixels
    prof = profile_module(Net(), in_channels=1, size=30)
    assert isinstance(prof, ModelProfile)
    assert prof.params == 40 and prof.flops_per_mp == pytest.approx(per_mp)


def test_measure_latency_reports_positive_numbers():
    calls = []
    conv = nn.Conv2d(1, 4, 3, padding=1)

    def fn(x):
        calls.append(torch.is_inference_mode_enabled())
        return conv(x)

    stats = measure_latency(fn, torch.zeros(2, 1, 32, 32), warmup=1, repeats=3)
    assert isinstance(stats, LatencyStats)
    assert stats.repeats == 3 and len(calls) == 4 and all(calls)
    assert 0 < stats.min_ms <= stats.median_ms
    assert stats.mean_ms > 0 and stats.megapixels_per_s > 0


def test_measure_latency_rejects_bad_counts():
    with pytest.raises(ValueError):
        measure_latency(lambda x: x, torch.zeros(1), repeats=0)


@pytest.mark.gpu
def test_measure_latency_cuda():
    conv = nn.Conv2d(1, 4, 3, padding=1).cuda()
    stats = measure_latency(conv, torch.zeros(1, 1, 64, 64, device="cuda"), repeats=2)
    assert stats.min_ms > 0
