"""Synthetic rain streaks over a clean image, in the style of Rain100L/Rain100H.

Styles: `light` (sparse thin streaks, Rain100L-like), `heavy` (short, blurry streaks in 2–4
layers with a haze veil), `torrent` (long, sharp, thin streaks crossing in 3–5 directions:
Rain100H's look), `textured` (streaks motion-blurred from thresholded noise, so their
brightness varies along them and between them, with parameters drawn per image) and the
mixtures `mix` (light or heavy), `any` (light, heavy or torrent) and `all` (half
textured, half any).

A streak layer is a sparse field of random impulses convolved with an anti-aliased line
kernel (length, width, angle), softened by a slight Gaussian blur and scaled by a
brightness. Layers are composited additively (rain only adds light, clipped to 1), which
is how the Rain100L/H-style synthetic sets are made. Heavy rain also adds a thin haze veil
(screen blend, so the result still never gets darker than the clean image).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from restore.errors import RestoreError

__all__ = ["RAIN_PRESETS", "RainStreaks", "line_kernel", "streak_layer", "textured_layer"]

# A mixture draws one style per call. `mix` is kept as it was for the runs trained on it.
_MIXES = {
    "mix": ("light", "heavy"),
    "any": ("light", "heavy", "torrent"),
    "all": ("light", "heavy", "torrent", "textured", "textured", "textured"),
    "wide": ("light", "heavy", "torrent", "downpour", "downpour", "downpour"),
}
RAIN_PRESETS = ("mix", "any", "all", "wide", "light", "heavy", "torrent", "textured", "downpour")


@dataclass(frozen=True)
class _Style:
    layers: tuple[int, int]  # inclusive range of layer count
    max_angle: float  # base angle from vertical, degrees, uniform in ±max_angle
    angle_spread: float  # per-layer deviation from the base angle (std, degrees)
    density: tuple[float, float]  # streak seeds per pixel
    length: tuple[float, float]  # streak length in pixels (at full resolution)
    width: tuple[float, float]
    scales: tuple[float, ...]  # size factors of a layer's streaks (length, width, blur)
    brightness: tuple[float, float]
    blur: tuple[float, float]  # Gaussian σ in pixels
    haze: tuple[float, float]

    def render(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = clean.shape[:2]
        base = rng.uniform(-self.max_angle, self.max_angle)
        rain = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(self.layers[0], self.layers[1] + 1))):
            scale = float(rng.choice(self.scales))  # a "closer" layer: longer, wider, blurrier
            rain += rng.uniform(*self.brightness) * streak_layer(
                h,
                w,
                density=rng.uniform(*self.density),
                length=rng.uniform(*self.length) * scale,
                width=rng.uniform(*self.width) * scale,
                angle=base + self.angle_spread * rng.standard_normal(),
                blur=rng.uniform(*self.blur) * scale,
                rng=rng,
            )
        out = clean + rain[..., None]
        haze = rng.uniform(*self.haze)
        if haze > 0:
            out = 1.0 - (1.0 - np.clip(out, 0.0, 1.0)) * (1.0 - haze)  # screen blend: brightens only
        return np.clip(out, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class _Textured:
    """The photo-editor recipe (noise → blur → levels → motion blur), each parameter drawn
    per image from these ranges, a broad family around Rain100H's rain layer (whose mean,
    spread and horizontal/vertical autocorrelation no single setting matched)."""

    layers: tuple[int, int] = (2, 4)
    max_angle: float = 12.0  # Rain100H's streaks lean 4.8° from vertical on average (rain_statistics.py)
    angle_spread: float = 4.0
    drop: tuple[float, float] = (0.5, 1.5)  # σ of the noise blur: the size of a drop
    keep: tuple[float, float] = (0.01, 0.08)  # fraction of the blurred noise the levels keep
    length: tuple[float, float] = (20, 100)
    layer_mean: tuple[float, float] = (0.05, 0.1)  # each layer is scaled to this mean

    def render(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = clean.shape[:2]
        base = rng.uniform(-self.max_angle, self.max_angle)
        rain = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(self.layers[0], self.layers[1] + 1))):
            layer = textured_layer(h, w, drop=rng.uniform(*self.drop), keep=rng.uniform(*self.keep),
                                   length=rng.uniform(*self.length),
                                   angle=base + self.angle_spread * rng.standard_normal(), rng=rng)
            rain += layer * (rng.uniform(*self.layer_mean) / (float(layer.mean()) + 1e-6))
        return np.clip(clean + rain[..., None], 0.0, 1.0).astype(np.float32)


# Calibrated on BSD backgrounds to roughly the input PSNR of the real sets
# (Rain100L ≈ 28 dB, Rain100H ≈ 12–14 dB).
_STYLES = {
    "light": _Style(
        layers=(1, 1), max_angle=25, angle_spread=0, density=(0.001, 0.003), length=(20, 45),
        width=(1.0, 1.5), scales=(1.0,), brightness=(0.25, 0.5), blur=(0.4, 0.8), haze=(0, 0),
    ),
    "heavy": _Style(
        layers=(2, 4), max_angle=20, angle_spread=6, density=(0.001, 0.003), length=(30, 70),
        width=(1.0, 2.5), scales=(1.0, 1.0, 1.6), brightness=(0.3, 0.5), blur=(0.5, 1.0), haze=(0.04, 0.15),
    ),
    # Rain100H's streaks are long (100–300 px), 1–2 px wide, sharp, and often cross at
    # several angles. `heavy` has about the same amount of rain but short, blurry streaks,
    # and the networks trained on `mix` gained only 5.5–5.6 dB there. Density and
    # brightness keep the rain layer's statistics over BSD200 close to Rain100H's residual
    # (mean 0.19 vs 0.21, pixels above 0.1: 0.65 vs 0.69, input PSNR 12.7 vs 12.1 dB:
    # benchmarks/rain_statistics.py; bounds in tests/test_degradations.py).
    "torrent": _Style(
        layers=(3, 5), max_angle=25, angle_spread=8, density=(0.0004, 0.0012), length=(100, 300),
        width=(1.0, 2.0), scales=(1.0,), brightness=(0.25, 0.45), blur=(0.3, 0.6), haze=(0.0, 0.06),
    ),
    "textured": _Textured(),
    # The nets trained on `all` under-remove on Rain100H's rainiest images and over-remove
    # on its lightest (their mean error follows the image's amount of rain, r = 0.73;
    # benchmarks/derain_errors.py). `textured`'s per-image amount stops at p95 0.31 where
    # Rain100H's reaches 0.37; `downpour` spreads it to cover both tails. Training on it
    # (`wide`) shifted that error rather than removing it (docs/RESULTS.md §3.5).
    "downpour": _Textured(layers=(2, 5), layer_mean=(0.035, 0.11)),
}


def line_kernel(length: float, angle: float, width: float) -> np.ndarray:
    """Anti-aliased line of `length` and `width` pixels, `angle` degrees from vertical,
    peak 1, with rounded (elliptically tapered) ends."""
    half = max(length, 1.0) / 2
    r = int(math.ceil(half + width))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
    th = math.radians(angle)
    along = yy * math.cos(th) + xx * math.sin(th)
    across = xx * math.cos(th) - yy * math.sin(th)
    cover = np.clip(width / 2 + 0.5 - np.abs(across), 0.0, 1.0)
    taper = np.sqrt(np.clip(1.0 - (along / (half + 0.5)) ** 2, 0.0, 1.0))
    k = cover * taper
    # crop empty borders (a near-vertical line needs few columns); k is point-symmetric,
    # so cropping the same amount from both sides keeps the centre
    rows, cols = np.flatnonzero(k.any(axis=1)), np.flatnonzero(k.any(axis=0))
    dr, dc = rows[0] if rows.size else 0, cols[0] if cols.size else 0
    return k[dr : k.shape[0] - dr, dc : k.shape[1] - dc].astype(np.float32)


def _fast_len(n: int) -> int:
    """Smallest m >= n with only factors 2, 3, 5 (fast FFT sizes)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _gauss_transfer(fh: int, fw: int, sigma: float) -> np.ndarray:
    """The Gaussian's transfer function on an rfft2 grid: a blur in the FFT product for free."""
    fy, fx = np.fft.fftfreq(fh)[:, None], np.fft.rfftfreq(fw)[None, :]
    return np.exp(-2 * (math.pi * sigma) ** 2 * (fy**2 + fx**2)).astype(np.float32)


def _kernel_transfer(kernel: np.ndarray, fh: int, fw: int) -> np.ndarray:
    """The rfft2 of `kernel` on an fh×fw canvas, centred at (0, 0) so the product does not shift."""
    kh, kw = kernel.shape
    padded = np.zeros((fh, fw), np.float32)
    padded[:kh, :kw] = kernel
    return np.fft.rfft2(np.roll(padded, (-(kh // 2), -(kw // 2)), axis=(0, 1)))


def streak_layer(
    h: int,
    w: int,
    *,
    density: float,
    length: float,
    width: float,
    angle: float,
    blur: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """One H×W layer of streaks in [0, 1]: random impulses (intensity 0.5–1) convolved
    with a line kernel and a Gaussian of σ=`blur`.

    Both convolutions are one FFT product (the Gaussian's transfer function is analytic),
    far cheaper than a direct conv with a 70-pixel kernel. Impulses are drawn on a canvas
    larger than the image by the kernel size, so streaks enter from outside and the borders
    are as rainy as the centre; the canvas has an FFT-friendly size.
    """
    kernel = line_kernel(length, angle, width)
    kh, kw = kernel.shape
    fh, fw = _fast_len(h + kh), _fast_len(w + kw)
    seeds = rng.random((fh, fw), dtype=np.float32)
    impulses = np.where(seeds < density, 0.5 + 0.5 * seeds / max(density, 1e-12), 0.0).astype(np.float32)
    spec = np.fft.rfft2(impulses) * _kernel_transfer(kernel, fh, fw) * _gauss_transfer(fh, fw, blur)
    layer = np.fft.irfft2(spec, s=(fh, fw))[:h, :w]
    return np.clip(layer, 0.0, 1.0).astype(np.float32)


def textured_layer(
    h: int, w: int, *, drop: float, keep: float, length: float, angle: float, rng: np.random.Generator
) -> np.ndarray:
    """One H×W layer in [0, 1]: Gaussian noise blurred to drops of σ=`drop`, thresholded
    so a `keep` fraction survives (a ramp, not a step, so the drops keep their shading),
    then averaged along a line of `length` px at `angle` (one 1-px line kernel)."""
    kernel = line_kernel(length, angle, 1.0)
    kernel /= kernel.sum()
    kh, kw = kernel.shape
    fh, fw = _fast_len(h + kh), _fast_len(w + kw)
    noise = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((fh, fw), dtype=np.float32))
                          * _gauss_transfer(fh, fw, drop), s=(fh, fw))
    noise /= noise.std() + 1e-12
    threshold = float(np.quantile(noise[:: 4, :: 4], 1.0 - keep))  # a subsample is enough
    drops = np.clip(noise - threshold, 0.0, 1.0).astype(np.float32)
    layer = np.fft.irfft2(np.fft.rfft2(drops) * _kernel_transfer(kernel, fh, fw), s=(fh, fw))[:h, :w]
    return np.clip(layer, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class RainStreaks:
    """Rain over a clean image: preset `light` (sparse thin streaks, like Rain100L),
    `heavy` (dense blurry streaks in 2–4 layers at different angles and scales plus a haze
    veil), `torrent` (long sharp streaks crossing in 3–5 directions, like Rain100H),
    `textured` (streaks of varying brightness from motion-blurred noise), `downpour`
    (textured over a wider range of rain amount), or a mixture: `mix` (light or heavy),
    `any` (light, heavy or torrent), `all` (half textured, half any) and `wide` (half
    downpour, half any), drawn per call."""

    preset: str = "mix"
    name: ClassVar[str] = "rain"

    def __post_init__(self) -> None:
        if self.preset not in RAIN_PRESETS:
            raise RestoreError(f"unknown rain preset {self.preset!r}: use one of {', '.join(RAIN_PRESETS)}")

    def setting(self) -> str:
        return f"rain-{self.preset}"

    def __call__(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if clean.ndim != 3:
            raise RestoreError(f"rain needs an H×W×C image, got shape {tuple(clean.shape)}")
        mixture = _MIXES.get(self.preset)
        preset = mixture[int(rng.integers(len(mixture)))] if mixture else self.preset
        return _STYLES[preset].render(clean, rng)
