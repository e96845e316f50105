"""Noise-level conditioning and blind noise-level estimation.

A noise-level-conditioned network takes the image plus one constant channel holding σ/255
(FFDNet style). Blind use estimates σ from the image itself with the PCA method of
Chen, Zhu & Heng (ICCV 2015, "An Efficient Statistical Method for Image Noise Level
Estimation"): the smallest eigenvalues of the covariance of small patches belong to the
noise-only subspace; σ² is the mean of the tail of eigenvalues whose mean equals its median.
On all patches texture leaks into that tail and σ comes out too high on clean or lightly
noisy images (4.6 on clean Set12, where a blind denoiser then smooths away fine detail), so
the estimate is refined on weak-texture patches only, as Liu, Tanaka & Okutomi do (TIP 2013,
"Single-Image Noise Level Estimation for Blind Denoising"): keep the patches whose gradient
energy white noise of the current σ would reach, estimate again, repeat until σ settles.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch


def append_noise_map(x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """x: N×C×H×W in [0,1]; sigma on the 0–255 scale (a float or one value per image)."""
    n, _, h, w = x.shape
    level = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1) / 255.0
    return torch.cat([x, level.expand(n, 1, h, w)], dim=1)


def _patches(gray: np.ndarray, size: int, stride: int, max_patches: int, scale: int = 1) -> np.ndarray:
    """float64 patches (one per row) on a `stride` grid, at most `max_patches` of them;
    `scale` > 1 takes them from the image averaged over scale×scale blocks.

    The subsample (evenly spaced in row-major grid order) is chosen *before* any patch is
    copied: materialising every patch of a 48 MP photo first would take ~2 GB. For the same
    reason the block average is taken per picked patch, never of the whole image."""
    window = size * scale
    grid = np.lib.stride_tricks.sliding_window_view(gray, (window, window))[:: stride * scale, :: stride * scale]
    rows, cols = grid.shape[:2]
    if rows * cols > max_patches:  # a deterministic subsample keeps large images fast
        pick = np.linspace(0, rows * cols - 1, max_patches).astype(int)
        grid = grid[pick // cols, pick % cols]
    x = grid.reshape(-1, size, scale, size, scale)
    if scale > 1:  # windows start on multiples of `scale`: the blocks of a downsampled image
        return x.mean(axis=(2, 4), dtype=np.float64).reshape(-1, size * size)
    return x.reshape(-1, size * size).astype(np.float64)


# Smallest side σ is estimated on: below it noise and content cannot be told apart, so the image counts as clean.
MIN_SIDE = 16


def _patch_count(shape: tuple[int, ...], patch: int, stride: int) -> int:
    return max(0, (shape[0] - patch) // stride + 1) * max(0, (shape[1] - patch) // stride + 1)


def _fit_to_small_image(shape: tuple[int, ...], patch: int, stride: int) -> tuple[int, int]:
    """Patch size and stride that still give a usable covariance on a small image.

    The patch covariance (patch² dimensions) needs many more patches than dimensions, or its
    small eigenvalues are zeros of a rank-deficient matrix and σ comes out 0 (a noisy 24×24
    crop read as σ = 0; 32² gave half the true σ). Small images therefore take every patch
    (stride 1) and, below ~2·patch² patches, smaller patches. Large images are unaffected."""
    while patch > 3 and _patch_count(shape, patch, 1) < 2 * patch * patch:
        patch -= 2
    if _patch_count(shape, patch, stride) < 16 * patch * patch:
        stride = 1
    return patch, stride


# Share of pure-noise patches kept by the weak-texture test: 0.995 measured best on Set12
# (0.99 cut enough noise patches to read σ = 75 as 74.5; 0.999 let more texture in at low σ).
WEAK_TEXTURE_QUANTILE = 0.995
MAX_REFINEMENTS = 10
MIN_PATCHES_PER_DIM = 4


def estimate_sigma(image: np.ndarray, *, patch: int = 7, stride: int = 3, max_patches: int = 60000,
                   weak_texture: bool = True, scale: int = 1) -> float:
    """Blind σ estimate (0–255 scale) of additive white Gaussian noise.

    image: H×W or H×W×C float in [0,1]. Colour images are estimated per channel and the
    median is returned (AWGN here is i.i.d. across channels). `weak_texture=False` gives
    Chen et al.'s estimate on all patches (for comparison; it reads texture as noise).
    `scale=2` estimates on the image averaged over 2×2 blocks (see `half_resolution_sigma`).
    """
    img = np.asarray(image)  # no float64 copy of the whole image: only the patches used are converted
    if img.ndim == 3:
        return float(np.median([estimate_sigma(img[..., c], patch=patch, stride=stride, max_patches=max_patches,
                                               weak_texture=weak_texture, scale=scale) for c in range(img.shape[2])]))
    shape = (img.shape[0] // scale, img.shape[1] // scale)
    if min(shape) < MIN_SIDE:  # a few dozen pixels cannot tell noise from content: leave them be
        return 0.0
    patch, stride = _fit_to_small_image(shape, patch, stride)
    x = _patches(img, patch, stride, max_patches, scale)
    if not weak_texture:
        return _pca_sigma(x) * 255.0
    x = _unsaturated(x, patch)
    sigma = _pca_sigma(x)
    energy, limit = _gradient_energy(x, patch), _noise_energy_limit(patch)
    for _ in range(MAX_REFINEMENTS):
        weak = x[energy < limit * sigma**2]
        if len(weak) < MIN_PATCHES_PER_DIM * patch * patch:  # too few for a covariance: keep what we have
            break
        refined = _pca_sigma(weak)
        if abs(refined - sigma) < 1e-7:
            break
        sigma = refined
    return sigma * 255.0


# Camera noise is low-pass (demosaicking spreads each sensor sample over its neighbours), so
# averaging 2×2 blocks keeps much more of it than the half that white noise keeps, and the
# weak-texture estimate reads it far below its level: an AWGN model then leaves much of it
# (RESULTS §3.6). The CLI and the app point to the camera-noise model when the noise seen at
# half resolution is visible and at least twice what white noise of the estimated σ would
# leave. Texture alone reads at most 12.8 there on clean CBSD68 (7.6 on LIVE1), hence 15.
CORRELATED_RATIO = 2.0
MIN_HALF_RESOLUTION_SIGMA = 15.0
# What the CLI and the app say when `looks_correlated` (each adds where to go next).
CORRELATED_NOISE_NOTE = ("the noise is correlated between neighbouring pixels, as camera noise is, "
                         "and a Gaussian-noise model leaves much of it in")


def half_resolution_sigma(image: np.ndarray) -> float:
    """2·σ of the image averaged over 2×2 blocks: the full-resolution σ of white noise that
    would leave as much at half resolution. ≈ σ for white noise; more for correlated noise."""
    return 2.0 * estimate_sigma(image, scale=2)


def is_correlated(sigma: float, half_sigma: float) -> bool:
    """The rule on the two estimates (`estimate_sigma`, `half_resolution_sigma`) of one image."""
    return half_sigma >= MIN_HALF_RESOLUTION_SIGMA and half_sigma >= CORRELATED_RATIO * sigma


def looks_correlated(image: np.ndarray, sigma: float | None = None) -> bool:
    """True when the image holds visible noise that is far from white (camera noise, most often).
    `sigma`: the image's `estimate_sigma`, if already known."""
    return is_correlated(estimate_sigma(image) if sigma is None else sigma, half_resolution_sigma(image))


def _pca_sigma(x: np.ndarray) -> float:
    """Chen et al.'s estimate (0–1 scale) from patches, one per row."""
    x = x - x.mean(axis=0, keepdims=True)
    eig = np.sort(np.linalg.eigvalsh(x.T @ x / len(x)))  # ascending
    eig = np.clip(eig, 0.0, None)
    # drop the largest eigenvalues (image structure) until the tail's mean no longer
    # exceeds its median: what is left is the flat spectrum of white noise
    for n in range(len(eig), 0, -1):
        tail = eig[:n]
        if tail.mean() <= np.median(tail):
            return float(np.sqrt(tail.mean()))
    return float(np.sqrt(eig[0]))


def _gradient_energy(x: np.ndarray, size: int) -> np.ndarray:
    """Sum of squared horizontal and vertical differences inside each patch (its texture)."""
    p = x.reshape(-1, size, size)
    return (np.diff(p, axis=2) ** 2).sum(axis=(1, 2)) + (np.diff(p, axis=1) ** 2).sum(axis=(1, 2))


@lru_cache(maxsize=None)
def _noise_energy_limit(size: int) -> float:
    """Gradient energy that unit-σ white noise stays under in WEAK_TEXTURE_QUANTILE of patches.

    Liu et al. approximate this law by a gamma distribution; sampling it (20 000 patches, fixed
    seed) follows our difference operator exactly, up to sampling error, and needs no SciPy."""
    noise = np.random.default_rng(0).standard_normal((20000, size * size))
    return float(np.quantile(_gradient_energy(noise, size), WEAK_TEXTURE_QUANTILE))


def _unsaturated(x: np.ndarray, size: int) -> np.ndarray:
    """Patches without pixels clipped at exactly 0 or 1: blown highlights and crushed shadows
    are flat, so the weak-texture test would pick them and read σ as 0. All patches if too few
    remain."""
    keep = ~((x == 0.0) | (x == 1.0)).any(axis=1)
    return x[keep] if keep.sum() >= MIN_PATCHES_PER_DIM * size * size else x
