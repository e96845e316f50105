"""Realistic camera noise by unprocessing (Brooks et al., "Unprocessing Images for Learned
Raw Denoising", CVPR 2019), in the spirit of the IR-NAS SIM1800 set.

sRGB → linear → camera RGB (inverse CCM) → inverse white balance → RGGB mosaic →
Poisson–Gaussian noise → white balance → bilinear demosaic → CCM → sRGB [→ JPEG].
Only the noise is taken from that round trip (see `CameraNoise`). All steps are
pixel-wise or 3×3 numpy, so any H and W (odd too) work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from restore.data.degradations import jpeg_roundtrip
from restore.errors import RestoreError

__all__ = [
    "CameraNoise",
    "bayer_masks",
    "demosaic_bilinear",
    "linear_to_srgb",
    "poisson_gaussian_noise",
    "random_ccm",
    "srgb_to_linear",
]

# XYZ → camera matrices of four real cameras (the set used by Brooks et al.); a random
# convex combination gives a plausible, varied colour-correction matrix.
_XYZ2CAMS = np.array(
    [
        [[1.0234, -0.2969, -0.2266], [-0.5625, 1.6328, -0.0469], [-0.0703, 0.2188, 0.6406]],
        [[0.4913, -0.0541, -0.0202], [-0.613, 1.3513, 0.2906], [-0.1564, 0.2151, 0.7183]],
        [[0.838, -0.263, -0.0639], [-0.2887, 1.0725, 0.2496], [-0.0627, 0.1427, 0.5438]],
        [[0.6596, -0.2079, -0.0562], [-0.4782, 1.3016, 0.1933], [-0.097, 0.1581, 0.5181]],
    ]
)
_RGB2XYZ = np.array(  # sRGB (D65) primaries
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """Inverse sRGB transfer curve (IEC 61966-2-1)."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """sRGB transfer curve; input clipped to [0, 1] first (sensor saturation)."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(np.float32)


def random_ccm(rng: np.random.Generator) -> np.ndarray:
    """A random sRGB → camera-RGB matrix, rows normalised to sum 1 so grey stays grey."""
    weights = rng.uniform(1e-8, 1.0, size=len(_XYZ2CAMS))
    xyz2cam = np.tensordot(weights / weights.sum(), _XYZ2CAMS, axes=1)
    rgb2cam = xyz2cam @ _RGB2XYZ
    return rgb2cam / rgb2cam.sum(axis=1, keepdims=True)


def random_gains(rng: np.random.Generator) -> np.ndarray:
    """White-balance gains (R, G, B) incl. a global brightness gain, ranges as Brooks et al."""
    rgb_gain = 1.0 / np.clip(rng.normal(0.8, 0.1), 0.5, 1.0)  # ≥ 1 so the raw never saturates
    red, blue = rng.uniform(1.9, 2.4), rng.uniform(1.5, 1.9)
    return np.array([red, 1.0, blue]) * rgb_gain


def random_noise_levels(rng: np.random.Generator, shot_range: tuple[float, float]) -> tuple[float, float]:
    """Shot level log-uniform in `shot_range`; read level follows the log-linear fit of
    Brooks et al. (log read = 2.18 log shot + 1.20 + N(0, 0.26)), as real sensors do."""
    log_shot = rng.uniform(np.log(shot_range[0]), np.log(shot_range[1]))
    log_read = 2.18 * log_shot + 1.20 + rng.normal(0.0, 0.26)
    return float(np.exp(log_shot)), float(np.exp(log_read))


def bayer_masks(h: int, w: int) -> np.ndarray:
    """H×W×3 boolean masks of an RGGB colour-filter array (R at (0, 0), B at (1, 1))."""
    yy, xx = np.mgrid[0:h, 0:w]
    r = (yy % 2 == 0) & (xx % 2 == 0)
    b = (yy % 2 == 1) & (xx % 2 == 1)
    return np.stack([r, ~(r | b), b], axis=-1)


def poisson_gaussian_noise(raw: np.ndarray, shot: float, read: float, rng: np.random.Generator) -> np.ndarray:
    """Heteroscedastic Gaussian approximation of Poisson–Gaussian sensor noise:
    variance = shot·signal + read."""
    std = np.sqrt(np.maximum(raw, 0.0) * shot + read)
    return (raw + rng.standard_normal(raw.shape, dtype=np.float32) * std).astype(np.float32)


def _conv3x3(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """'same' 3×3 correlation with zero padding (x: H×W×C, k: 3×3)."""
    p = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    h, w = x.shape[:2]
    out = np.zeros_like(x)
    for dy in range(3):
        for dx in range(3):
            if k[dy, dx]:
                out += k[dy, dx] * p[dy : dy + h, dx : dx + w]
    return out


_K_GREEN = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], dtype=np.float32)
_K_RB = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float32)


def demosaic_bilinear(mosaic: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Bilinear demosaic as normalised convolution: interpolate each colour from its own
    sites; dividing by the convolved mask makes borders (and odd sizes) exact."""
    sampled = (mosaic[..., None] * masks).astype(np.float32)
    m = masks.astype(np.float32)
    out = np.empty_like(sampled)
    for c, k in enumerate((_K_RB, _K_GREEN, _K_RB)):
        num = _conv3x3(sampled[..., c : c + 1], k)
        den = _conv3x3(m[..., c : c + 1], k)
        out[..., c : c + 1] = num / np.maximum(den, 1e-8)
    return out


@dataclass(frozen=True)
class CameraNoise:
    """Realistic sRGB camera noise (see module docstring).

    The noise is transferred as `process(noisy raw) - process(clean raw)` added to the
    clean image, so the result differs from the clean target only by (realistically
    shaped: demosaiced, colour-mixed, gamma-compressed) noise — not by the blur of a
    bilinear demosaic, which would otherwise cap the noise-free PSNR near 28 dB. Gray
    input is processed as a grey RGB image and returned as BT.601 luma. With `jpeg=True`
    the result is JPEG-coded at a quality drawn from `jpeg_quality` (60–95).
    """

    jpeg: bool = False
    shot_range: tuple[float, float] = (1e-4, 1.2e-2)
    jpeg_quality: tuple[int, int] = (60, 95)
    name: ClassVar[str] = "camera"

    def setting(self) -> str:
        return "camera-jpeg" if self.jpeg else "camera"

    def __call__(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if clean.ndim != 3 or clean.shape[2] not in (1, 3):
            raise RestoreError(f"camera noise needs an H×W×1 or H×W×3 image, got {tuple(clean.shape)}")
        gray = clean.shape[2] == 1
        rgb = np.repeat(clean, 3, axis=2) if gray else clean
        rgb2cam = random_ccm(rng)
        cam2rgb = np.linalg.inv(rgb2cam).astype(np.float32)  # the camera's colour correction
        gains = random_gains(rng).astype(np.float32)
        shot, read = random_noise_levels(rng, self.shot_range)
        masks = bayer_masks(*rgb.shape[:2])

        raw = _unprocess(rgb, rgb2cam.astype(np.float32), gains, masks)
        noisy = poisson_gaussian_noise(raw, shot, read, rng)
        noise = _process(noisy, cam2rgb, gains, masks) - _process(raw, cam2rgb, gains, masks)
        out = np.clip(rgb + noise, 0.0, 1.0)  # an 8-bit camera output saturates

        if self.jpeg:
            out = jpeg_roundtrip(out, int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1)))
        if gray:
            out = (out @ _LUMA)[..., None]
        return out.astype(np.float32, copy=False)


def _unprocess(rgb: np.ndarray, rgb2cam: np.ndarray, gains: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """sRGB → linear → camera RGB → undo white balance → RGGB mosaic (H×W)."""
    cam = srgb_to_linear(rgb) @ rgb2cam.T
    cam = np.clip(cam / gains, 0.0, 1.0)  # the sensor saturates at 1
    return (cam * masks).sum(axis=2)


def _process(raw: np.ndarray, cam2rgb: np.ndarray, gains: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Mosaic → white balance → clip → bilinear demosaic → colour correction → sRGB."""
    balanced = np.clip(raw * (masks @ gains), 0.0, 1.0)
    return linear_to_srgb(demosaic_bilinear(balanced, masks) @ cam2rgb.T)
