"""PSNR, SSIM and the SSIM-based training losses, in one tested place (BasicSR conventions).

Evaluation metrics (`psnr`, `ssim`) take numpy H×W[×C] arrays or torch tensors (C×H×W,
N×C×H×W), compute in float64 and return a Python float; a batch gives the mean over its
images. `data_range` is always explicit (1.0 for [0, 1] data, 255 for 8-bit values): guessing
it from the data is how published numbers end up incomparable.

SSIM is Wang et al. 2004 — 11×11 Gaussian window, σ = 1.5, K1 = 0.01, K2 = 0.03, population
(co)variances — averaged over the 'valid' region only, which is exactly what
`skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False)` computes. `ssim_torch` is the same definition, differentiable.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
import torch
import torch.nn.functional as F

from restore.errors import RestoreError

__all__ = ["log_ssim_loss", "mse_log_ssim_loss", "psnr", "rgb_to_y", "ssim", "ssim_torch"]

_WINDOW, _SIGMA, _K1, _K2 = 11, 1.5, 0.01, 0.03
# ITU-R BT.601 luma as MATLAB's rgb2ycbcr, for [0, 1] input: Y in [16/255, 235/255]
_Y_WEIGHTS = (65.481 / 255, 128.553 / 255, 24.966 / 255)
_Y_OFFSET = 16 / 255


def psnr(x, y, *, data_range: float, crop_border: int = 0, y_channel: bool = False) -> float:
    """Peak signal-to-noise ratio in dB; inf when the images are identical."""
    values = []
    for a, b in zip(*_prepare(x, y, data_range, crop_border, y_channel)):
        mse = np.mean((a - b) ** 2)
        values.append(math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse))
    return float(np.mean(values))


def ssim(x, y, *, data_range: float, crop_border: int = 0, y_channel: bool = False) -> float:
    """Mean structural similarity (colour: mean over channels; batch: mean over images)."""
    a, b = _prepare(x, y, data_range, crop_border, y_channel)
    if min(a.shape[2:]) < _WINDOW:
        raise RestoreError(f"SSIM needs images of at least {_WINDOW}×{_WINDOW} pixels, got {a.shape[2]}×{a.shape[3]}")
    window = _gaussian_window(np.float64)
    maps = _filter_valid(np.stack([a, b, a * a, b * b, a * b]), window)  # (5, N, C, H', W')
    similarity = _ssim_map(*maps, data_range)
    return float(similarity.mean(axis=(2, 3)).mean())  # per channel, then channels and images


def rgb_to_y(img):
    """BT.601 Y of [0, 1] RGB; gray passes through. numpy: channels last (H×W×3 → H×W×1);
    torch: channels at dim −3 (N×3×H×W → N×1×H×W), differentiable."""
    if isinstance(img, torch.Tensor):
        if img.ndim < 3 or img.shape[-3] == 1:
            return img
        if img.shape[-3] != 3:
            raise RestoreError(f"rgb_to_y needs 1 or 3 channels, got {img.shape[-3]}")
        weights = torch.tensor(_Y_WEIGHTS, dtype=img.dtype, device=img.device).view(3, 1, 1)
        return (img * weights).sum(dim=-3, keepdim=True) + _Y_OFFSET
    arr = np.asarray(img)
    if arr.ndim < 3 or arr.shape[-1] == 1:
        return arr
    if arr.shape[-1] != 3:
        raise RestoreError(f"rgb_to_y needs 1 or 3 channels, got {arr.shape[-1]}")
    return arr @ np.asarray(_Y_WEIGHTS, dtype=np.result_type(arr.dtype, np.float32))[:, None] + _Y_OFFSET


# ------------------------------------------------------------------------------ torch


def ssim_torch(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0) -> torch.Tensor:
    """Differentiable mean SSIM of N×C×H×W (or C×H×W) batches, same definition as `ssim`."""
    if x.shape != y.shape:
        raise RestoreError(f"images differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.ndim == 3:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    if x.ndim != 4:
        raise RestoreError(f"ssim_torch expects N×C×H×W or C×H×W tensors, got shape {tuple(x.shape)}")
    if min(x.shape[2:]) < _WINDOW:
        raise RestoreError(f"SSIM needs images of at least {_WINDOW}×{_WINDOW} pixels, got {x.shape[2]}×{x.shape[3]}")
    n, channels = x.shape[:2]
    g = torch.as_tensor(_gaussian_window(np.float64), dtype=x.dtype, device=x.device)
    rows = g.view(1, 1, _WINDOW, 1).expand(channels, 1, _WINDOW, 1)
    cols = g.view(1, 1, 1, _WINDOW).expand(channels, 1, 1, _WINDOW)
    stacked = torch.cat([x, y, x * x, y * y, x * y])  # one separable 'valid' filter pass for all
    means = F.conv2d(F.conv2d(stacked, rows, groups=channels), cols, groups=channels)
    return _ssim_map(*means.split(n), data_range).mean()


def log_ssim_loss(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0, eps: float = 1e-6) -> torch.Tensor:
    """log10(1 / SSIM) (IR-NAS Eq. 8); SSIM is clamped to eps > 0 so the log stays finite."""
    return -torch.log10(ssim_torch(x, y, data_range=data_range).clamp_min(eps))


def mse_log_ssim_loss(pred: torch.Tensor, target: torch.Tensor, lam: float = 0.5) -> torch.Tensor:
    """MSE + λ·log10(1 / SSIM) (IR-NAS Eq. 7), for [0, 1] images."""
    return F.mse_loss(pred, target) + lam * log_ssim_loss(pred, target)


# ---------------------------------------------------------------------------- helpers


def _gaussian_window(dtype) -> np.ndarray:
    """Normalised 1-D Gaussian, the same taps as scipy's gaussian_filter(σ=1.5, truncate=3.5)."""
    offsets = np.arange(_WINDOW, dtype=np.float64) - _WINDOW // 2
    taps = np.exp(-(offsets**2) / (2 * _SIGMA**2))
    return (taps / taps.sum()).astype(dtype)


def _filter_valid(stack: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation over the last two axes (no border handling needed:
    SSIM is averaged only where the whole window fits). A matmul over sliding-window views
    runs as one strided loop, several times faster than summing shifted copies."""
    rows = sliding_window_view(stack, len(taps), axis=-2) @ taps
    return sliding_window_view(rows, len(taps), axis=-1) @ taps


def _ssim_map(mu_x, mu_y, xx, yy, xy, data_range: float):
    """Works on numpy arrays and tensors alike: only arithmetic."""
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    var_x, var_y, cov = xx - mu_x * mu_x, yy - mu_y * mu_y, xy - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    return numerator / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))


def _prepare(x, y, data_range, crop_border: int, y_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Validate and bring both inputs to float64 N×C×H×W, cropped and (optionally) as Y."""
    if not (isinstance(data_range, (int, float)) and math.isfinite(data_range) and data_range > 0):
        raise RestoreError(f"data_range must be a positive number (1.0 or 255), got {data_range!r}")
    if not (isinstance(crop_border, (int, np.integer)) and crop_border >= 0):
        raise RestoreError(f"crop_border must be a non-negative integer, got {crop_border!r}")
    a, b = _as_nchw(x), _as_nchw(y)
    if a.shape != b.shape:
        raise RestoreError(f"images differ in shape: {_shape_of(x)} vs {_shape_of(y)}")
    if crop_border:
        if 2 * crop_border >= min(a.shape[2:]):
            raise RestoreError(f"crop_border {crop_border} leaves nothing of a {a.shape[2]}×{a.shape[3]} image")
        a = a[..., crop_border:-crop_border, crop_border:-crop_border]
        b = b[..., crop_border:-crop_border, crop_border:-crop_border]
    if y_channel and a.shape[1] == 3:
        # Y is defined for [0, 1]; scale through it so 0–255 data works too
        a = _y_nchw(a / data_range) * data_range
        b = _y_nchw(b / data_range) * data_range
    elif y_channel and a.shape[1] != 1:
        raise RestoreError(f"y_channel needs gray or RGB images, got {a.shape[1]} channels")
    return a, b


def _y_nchw(a: np.ndarray) -> np.ndarray:
    return rgb_to_y(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def _as_nchw(img) -> np.ndarray:
    if isinstance(img, torch.Tensor):
        t = img.detach().to("cpu", torch.float64)
        if t.ndim == 2:
            t = t[None, None]
        elif t.ndim == 3:
            t = t[None]
        if t.ndim != 4:
            raise RestoreError(f"expected an H×W, C×H×W or N×C×H×W tensor, got shape {tuple(img.shape)}")
        return t.numpy()
    arr = np.asarray(img, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise RestoreError(f"expected an H×W or H×W×C array, got shape {arr.shape}")
    return arr.transpose(2, 0, 1)[None]


def _shape_of(img) -> tuple:
    return tuple(img.shape) if hasattr(img, "shape") else tuple(np.shape(img))
