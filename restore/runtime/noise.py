"""Noise-level conditioning and blind noise-level estimation.

A noise-level-conditioned network takes the image plus one constant channel holding σ/255
(FFDNet style). Blind use estimates σ from the image itself with the PCA method of
Chen, Zhu & Heng (ICCV 2015, "An Efficient Statistical Method for Image Noise Level
Estimation"): the smallest eigenvalues of the covariance of small patches belong to the
noise-only subspace; σ² is the mean of the tail of eigenvalues whose mean equals its median.
"""

from __future__ import annotations

import numpy as np
import torch


def append_noise_map(x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """x: N×C×H×W in [0,1]; sigma on the 0–255 scale (a float or one value per image)."""
    n, _, h, w = x.shape
    level = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1) / 255.0
    return torch.cat([x, level.expand(n, 1, h, w)], dim=1)


def _patches(gray: np.ndarray, size: int, stride: int) -> np.ndarray:
    windows = np.lib.stride_tricks.sliding_window_view(gray, (size, size))[::stride, ::stride]
    return windows.reshape(-1, size * size)


def estimate_sigma(image: np.ndarray, *, patch: int = 7, stride: int = 3, max_patches: int = 60000) -> float:
    """Blind σ estimate (0–255 scale) of additive white Gaussian noise.

    image: H×W or H×W×C float in [0,1]. Colour images are estimated per channel and the
    median is returned (AWGN here is i.i.d. across channels).
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3:
        return float(np.median([estimate_sigma(img[..., c], patch=patch, stride=stride) for c in range(img.shape[2])]))
    if min(img.shape) < patch:
        return 0.0
    x = _patches(img, patch, stride)
    if len(x) > max_patches:  # a deterministic subsample keeps large images fast
        x = x[np.linspace(0, len(x) - 1, max_patches).astype(int)]
    x = x - x.mean(axis=0, keepdims=True)
    eig = np.sort(np.linalg.eigvalsh(x.T @ x / len(x)))  # ascending
    eig = np.clip(eig, 0.0, None)
    # drop the largest eigenvalues (image structure) until the tail's mean no longer
    # exceeds its median: what is left is the flat spectrum of white noise
    for n in range(len(eig), 0, -1):
        tail = eig[:n]
        if tail.mean() <= np.median(tail):
            return float(np.sqrt(tail.mean()) * 255.0)
    return float(np.sqrt(eig[0]) * 255.0)
