"""Blind σ estimation (PCA method, Chen et al. 2015, on weak-texture patches, Liu et al. 2013)
on Set12, and the σ map."""

import numpy as np
import pytest
import torch
from PIL import Image

from restore.data import awgn_benchmark_noise
from restore.data.degradations import degradation_from_spec, degrade_for_eval
from restore.runtime.noise import CORRELATED_RATIO, append_noise_map, estimate_sigma, half_resolution_sigma, looks_correlated


def _set12(shared_dir):
    return [np.asarray(Image.open(p), dtype=np.float32) / 255 for p in sorted((shared_dir / "data/test/Set12").glob("*.png"))]


# Measured mean / largest error: σ 0: +0.96 / 2.10, 2: +0.37 / 1.01, 5: +0.31 / 1.54, 15: 0.00 / 0.35,
# 25: +0.02 / 0.42, 50: −0.19 / 0.69, 75: −0.29 / 1.48. On all patches (no weak-texture
# selection) clean images read +4.6 / 7.2, σ 2 +3.1 / 5.4, σ 5 +1.9 / 4.5, σ 15 +0.6 / 1.5.
@pytest.mark.parametrize("sigma,mean_error,max_error", [(0, 1.5, 3.0), (2, 1.0, 2.0), (5, 1.0, 2.5), (15, 0.5, 1.0),
                                                        (25, 0.5, 1.0), (50, 0.5, 1.5), (75, 0.75, 2.5)])
def test_estimator_error_on_set12(shared_dir, sigma, mean_error, max_error):
    errors = [estimate_sigma(awgn_benchmark_noise(clean, sigma) if sigma else clean) - sigma for clean in _set12(shared_dir)]
    assert abs(np.mean(errors)) < mean_error, errors
    assert np.max(np.abs(errors)) < max_error, errors


def test_blown_highlights_do_not_read_as_clean(shared_dir):
    """A photo whose top 60 % is clipped white (8-bit, noise σ = 10 below): the flat white
    patches have no texture, and read σ as 0 until clipped patches were left out."""
    photo = np.clip(awgn_benchmark_noise(_set12(shared_dir)[4], 10), 0, 1)
    photo = np.round(photo * 255) / 255
    photo[: int(0.6 * len(photo))] = 1.0
    assert abs(estimate_sigma(photo) - 10) < 1.5


def test_blind_denoising_of_a_lightly_noisy_image_improves_it(shared_dir):
    """σ = 2: the estimate on all patches (≈ 5) made `restore denoise` smooth two of the first
    three Set12 images 3.9 and 3.3 dB below their noisy input; with weak-texture patches all
    three improve (+1.10, +2.04, +0.22 dB)."""
    import restore
    from restore.metrics import psnr

    model = restore.load("denoise-gray")
    gains = []
    for clean in _set12(shared_dir)[:3]:
        noisy = awgn_benchmark_noise(clean, 2).astype(np.float32)
        restored = model.restore_array(noisy[..., None])[..., 0]
        gains.append(psnr(restored, clean, data_range=1.0) - psnr(noisy, clean, data_range=1.0))
    assert min(gains) > 0 and np.mean(gains) > 0.5, gains


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


# ------------------------------------------------------------------ noise that is not white
def _neighbour_correlated(noise: np.ndarray) -> np.ndarray:
    """[1 2 1]/4 along rows and columns: each pixel shares its neighbours' noise, as after
    bilinear demosaicking (per-pixel std 0.375× the input's)."""
    p = np.pad(noise, [(1, 1), (1, 1)] + [(0, 0)] * (noise.ndim - 2), mode="reflect")
    p = (p[:-2] + 2 * p[1:-1] + p[2:]) / 4
    return (p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]) / 4


def _photo(name: str) -> np.ndarray:
    from pathlib import Path

    return np.asarray(Image.open(Path(__file__).parents[1] / "restore/examples" / name), dtype=np.float32) / 255


def test_half_resolution_estimate_is_the_estimate_of_the_2x2_average():
    """Patches are averaged one by one (no half-size copy of a 48 MP photo); the result is
    the estimate on the downsampled image. Odd sides: the last row / column has no block."""
    img = np.clip(0.5 + np.random.default_rng(1).normal(0, 20 / 255, (101, 131)), 0, 1)
    down = img[:100, :130].reshape(50, 2, 65, 2).mean(axis=(1, 3))
    assert estimate_sigma(img, scale=2) == pytest.approx(estimate_sigma(down), rel=1e-9)
    assert half_resolution_sigma(img) == pytest.approx(2 * estimate_sigma(down), rel=1e-9)


@pytest.mark.parametrize("name", ["monarch.png", "birds.png"])
def test_white_noise_is_white_and_correlated_noise_is_flagged(name):
    """White noise (and a clean photo) must never be flagged; neighbour-correlated noise of
    per-pixel std 19 and 30 is, although the weak-texture estimate reads it as σ ≈ 3–6."""
    clean = _photo(name)
    rng = np.random.default_rng(0)
    quantised = lambda y: np.round(np.clip(y, 0, 1) * 255) / 255  # as a saved 8-bit photo
    assert not looks_correlated(clean)
    for sigma in (5, 10, 25, 50):
        noisy = quantised(clean + rng.normal(0, sigma / 255, clean.shape))
        assert half_resolution_sigma(noisy) < 1.5 * estimate_sigma(noisy) and not looks_correlated(noisy), sigma
    for level in (50, 80):  # per-pixel std 0.375 × level
        noisy = quantised(clean + _neighbour_correlated(rng.normal(0, level / 255, clean.shape)))
        assert estimate_sigma(noisy) < 7 and looks_correlated(noisy), level


def test_camera_noise_is_told_from_gaussian_noise_on_cbsd68(shared_dir):
    """Every 7th CBSD68 image (RESULTS §3.6): the camera noise of all 10 reads more than twice
    as strong at half resolution and 5 are flagged (the others hold little noise); none of the
    clean or AWGN σ = 5 / 25 versions is."""
    cam = degradation_from_spec("camera")
    flagged = 0
    for path in sorted((shared_dir / "data/test/CBSD68").glob("*.png"))[::7]:
        clean = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
        camera = degrade_for_eval(clean, path.name, cam).astype(np.float32)
        assert half_resolution_sigma(camera) > CORRELATED_RATIO * estimate_sigma(camera), path.name
        flagged += looks_correlated(camera)
        white = awgn_benchmark_noise(clean, 25)
        assert half_resolution_sigma(white) < 1.5 * estimate_sigma(white) and not looks_correlated(white), path.name
        # at σ = 5 texture can sway the ratio past 2, but not the half-resolution σ past 15
        assert not looks_correlated(awgn_benchmark_noise(clean, 5)) and not looks_correlated(clean), path.name
    assert flagged >= 4
