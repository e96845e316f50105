"""Blind σ estimation (PCA method, Chen et al. 2015) on Set12, and the σ map."""

import numpy as np
import pytest
import torch
from PIL import Image

from restore.data import awgn_benchmark_noise
from restore.runtime.noise import append_noise_map, estimate_sigma


@pytest.mark.parametrize("sigma,tolerance", [(5, 3.0), (15, 1.5), (25, 1.0), (50, 1.0), (75, 1.0)])
def test_estimator_error_on_set12(shared_dir, sigma, tolerance):
    errors = []
    for path in sorted((shared_dir / "data/test/Set12").glob("*.png")):
        clean = np.asarray(Image.open(path), dtype=np.float32) / 255
        errors.append(estimate_sigma(awgn_benchmark_noise(clean, sigma)) - sigma)
    assert abs(np.mean(errors)) < tolerance, errors
    assert np.max(np.abs(errors)) < 3 * tolerance + 1.5, errors


def test_colour_and_tiny_images():
    rng = np.random.default_rng(0)
    img = np.full((128, 128, 3), 0.5) + rng.normal(0, 20 / 255, (128, 128, 3))
    assert abs(estimate_sigma(img) - 20) < 1.5
    assert estimate_sigma(np.zeros((3, 3))) == 0.0


@pytest.mark.parametrize("side", [16, 24, 32, 48, 64])
def test_small_crops_are_estimated(side):
    """Crops of a real photo down to the app's 16×16 minimum: σ is not read as 0 (it was,
    below 32 px, as the patch covariance had fewer patches than dimensions)."""
    from pathlib import Path

    photo = Path(__file__).parents[1] / "restore/examples/monarch.png"
    clean = np.asarray(Image.open(photo).convert("L"), dtype=np.float32) / 255
    rng = np.random.default_rng(side)
    for sigma in (10, 25, 50):
        errors = []
        for _ in range(5):
            top, left = rng.integers(0, clean.shape[0] - side), rng.integers(0, clean.shape[1] - side)
            crop = clean[top:top + side, left:left + side]
            errors.append(estimate_sigma(crop + rng.normal(0, sigma / 255, crop.shape)) - sigma)
        assert abs(np.mean(errors)) < 0.35 * sigma, (sigma, errors)


def test_below_sixteen_pixels_counts_as_clean():
    """On a few dozen pixels noise and content look alike (a 7×9 photo crop would get any σ):
    below the app's 16-pixel minimum side the estimate is 0, so a blind denoiser leaves it be."""
    noise = np.random.default_rng(0).normal(0.5, 25 / 255, (16, 40))
    assert estimate_sigma(noise[:15]) == 0.0 and estimate_sigma(noise[:, :15]) == 0.0
    assert abs(estimate_sigma(noise) - 25) < 5


def test_noise_map_channel():
    x = torch.rand(2, 3, 8, 9)
    y = append_noise_map(x, torch.tensor([25.0, 50.0]))
    assert y.shape == (2, 4, 8, 9)
    assert torch.allclose(y[0, 3], torch.full((8, 9), 25 / 255))
    assert torch.allclose(y[1, 3], torch.full((8, 9), 50 / 255))
