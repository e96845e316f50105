"""Synthetic degradations: clean H×W×C float32 [0, 1] → degraded H×W×C float32.

Every degradation takes an explicit `np.random.Generator` and exposes `setting()`, a
short stable string ("awgn-s25", "jpeg-q10-90", "rain-heavy", "camera-jpeg") used for
naming runs and for seeding evaluation (`eval_rng`). Degradations whose strength varies
per sample (AWGN, JPEG) also expose `sample_level(rng)` and `apply(clean, level, rng)` so
a training loop can know the drawn level (e.g. σ for a noise-level map).
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from restore.errors import RestoreError

__all__ = [
    "AWGN",
    "JPEG",
    "Degradation",
    "LevelDegradation",
    "awgn_benchmark_noise",
    "degradation_from_spec",
    "degrade_for_eval",
    "eval_rng",
    "jpeg_roundtrip",
]


@runtime_checkable
class Degradation(Protocol):
    name: str

    def __call__(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...

    def setting(self) -> str: ...


@runtime_checkable
class LevelDegradation(Degradation, Protocol):
    """A degradation with a per-sample level (σ for AWGN, quality for JPEG)."""

    def sample_level(self, rng: np.random.Generator) -> float: ...

    def apply(self, clean: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray: ...


def _fmt(x: float) -> str:
    return f"{x:g}"


def _check_image(img: np.ndarray) -> None:
    if img.ndim != 3:
        raise RestoreError(f"expected an H×W×C image, got shape {tuple(img.shape)}")


# --------------------------------------------------------------------------- AWGN
@dataclass(frozen=True)
class AWGN:
    """Additive white Gaussian noise, σ on the 0–255 scale (fixed or uniform in a range).

    The noisy image is *not* clipped: that is the standard benchmark protocol
    (DnCNN/FFDNet), and clipping would bias the noise for dark and bright pixels.
    """

    sigma: float | None = None
    sigma_range: tuple[float, float] | None = None
    name: ClassVar[str] = "awgn"

    def __post_init__(self) -> None:
        if (self.sigma is None) == (self.sigma_range is None):
            raise RestoreError("AWGN needs exactly one of sigma or sigma_range")
        lo, hi = self.bounds
        if lo < 0 or hi < lo:
            raise RestoreError(f"bad AWGN sigma {self.setting()}: need 0 <= low <= high")

    @property
    def bounds(self) -> tuple[float, float]:
        if self.sigma is not None:
            return float(self.sigma), float(self.sigma)
        return float(self.sigma_range[0]), float(self.sigma_range[1])

    def setting(self) -> str:
        lo, hi = self.bounds
        return f"awgn-s{_fmt(lo)}" if lo == hi else f"awgn-s{_fmt(lo)}-{_fmt(hi)}"

    def sample_level(self, rng: np.random.Generator) -> float:
        lo, hi = self.bounds
        return lo if lo == hi else float(rng.uniform(lo, hi))

    def apply(self, clean: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
        _check_image(clean)
        noise = rng.standard_normal(clean.shape, dtype=np.float32) * np.float32(level / 255.0)
        return (clean + noise).astype(np.float32, copy=False)

    def __call__(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.apply(clean, self.sample_level(rng), rng)


# --------------------------------------------------------------------------- JPEG
def jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode with Pillow's JPEG encoder in memory and decode again.

    Gray (C=1) is coded as a single-channel JPEG; colour (C=3) uses Pillow's default
    chroma subsampling, 4:2:0 — what most cameras and the LIVE1 protocol use.
    """
    _check_image(img)
    if img.shape[2] not in (1, 3):
        raise RestoreError(f"JPEG needs 1 or 3 channels, got {img.shape[2]}")
    u8 = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    pil = Image.fromarray(u8[..., 0], "L") if u8.shape[2] == 1 else Image.fromarray(u8, "RGB")
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    out = np.asarray(Image.open(buf), dtype=np.float32) / 255.0
    return out.reshape(img.shape)


@dataclass(frozen=True)
class JPEG:
    """JPEG compression artefacts at a quality (1–100) fixed or drawn uniformly (integers)."""

    quality: int | None = None
    quality_range: tuple[int, int] | None = None
    name: ClassVar[str] = "jpeg"

    def __post_init__(self) -> None:
        if (self.quality is None) == (self.quality_range is None):
            raise RestoreError("JPEG needs exactly one of quality or quality_range")
        lo, hi = self.bounds
        if not 1 <= lo <= hi <= 100:
            raise RestoreError(f"bad JPEG quality {self.setting()}: need 1 <= low <= high <= 100")

    @property
    def bounds(self) -> tuple[int, int]:
        if self.quality is not None:
            return int(self.quality), int(self.quality)
        return int(self.quality_range[0]), int(self.quality_range[1])

    def setting(self) -> str:
        lo, hi = self.bounds
        return f"jpeg-q{lo}" if lo == hi else f"jpeg-q{lo}-{hi}"

    def sample_level(self, rng: np.random.Generator) -> float:
        lo, hi = self.bounds
        return float(lo if lo == hi else rng.integers(lo, hi + 1))

    def apply(self, clean: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
        return jpeg_roundtrip(clean, int(level))

    def __call__(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.apply(clean, self.sample_level(rng), rng)


# --------------------------------------------------------------------------- specs
_NUM = r"\d+(?:\.\d+)?"


def _parse_level(arg: str, spec: str) -> tuple[float, float]:
    m = re.fullmatch(rf"({_NUM})(?:-({_NUM}))?", arg)
    if not m:
        raise RestoreError(f"bad degradation spec {spec!r}: expected a number or a range like 0-75")
    lo = float(m.group(1))
    hi = float(m.group(2)) if m.group(2) else lo
    return lo, hi


def degradation_from_spec(spec: str) -> Degradation:
    """Parse `awgn:25`, `awgn:0-75`, `jpeg:20`, `jpeg:10-90`, `rain[:PRESET]` (see `RAIN_PRESETS`),
    `camera`, `camera:jpeg`."""
    from restore.data.camera import CameraNoise
    from restore.data.rain import RAIN_PRESETS, RainStreaks

    kind, _, arg = spec.strip().lower().partition(":")
    if kind == "awgn":
        if not arg:
            raise RestoreError(f"bad degradation spec {spec!r}: AWGN needs a sigma, e.g. awgn:25")
        lo, hi = _parse_level(arg, spec)
        return AWGN(sigma=lo) if lo == hi else AWGN(sigma_range=(lo, hi))
    if kind == "jpeg":
        if not arg:
            raise RestoreError(f"bad degradation spec {spec!r}: JPEG needs a quality, e.g. jpeg:20")
        lo, hi = _parse_level(arg, spec)
        if lo != int(lo) or hi != int(hi):
            raise RestoreError(f"bad degradation spec {spec!r}: JPEG quality must be an integer")
        return JPEG(quality=int(lo)) if lo == hi else JPEG(quality_range=(int(lo), int(hi)))
    if kind == "rain":
        preset = arg or "mix"
        if preset not in RAIN_PRESETS:
            raise RestoreError(
                f"bad degradation spec {spec!r}: rain preset must be one of {', '.join(RAIN_PRESETS)}"
            )
        return RainStreaks(preset)
    if kind == "camera":
        if arg not in ("", "jpeg"):
            raise RestoreError(f"bad degradation spec {spec!r}: use camera or camera:jpeg")
        return CameraNoise(jpeg=arg == "jpeg")
    raise RestoreError(
        f"unknown degradation {spec!r}: use awgn:S, awgn:LO-HI, jpeg:Q, jpeg:LO-HI, "
        f"rain[:{'|'.join(RAIN_PRESETS)}], camera[:jpeg]"
    )


# --------------------------------------------------------------------------- evaluation
def eval_rng(image_name: str, setting: str) -> np.random.Generator:
    """A generator seeded by sha256(name, setting): the same on every run and machine,
    and independent of evaluation order (unlike one shared generator)."""
    digest = hashlib.sha256(f"{image_name}\x00{setting}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def awgn_benchmark_noise(clean: np.ndarray, sigma: float) -> np.ndarray:
    """The DnCNN/FFDNet test protocol: `np.random.seed(0)` before every image, noise
    `randn(*shape) * σ/255` added in float64, result not clipped.

    The shape only sets how many draws are taken (C order), so H×W×1 gets the same noise
    as H×W. Matches the peer's reference numbers (Set12 30.46 dB at σ=25).
    """
    noise = np.random.RandomState(0).standard_normal(clean.shape) * (sigma / 255.0)
    return (clean.astype(np.float64) + noise).astype(np.float32)


def degrade_for_eval(clean: np.ndarray, name: str, degradation: Degradation) -> np.ndarray:
    """Deterministic degradation of a test image: benchmark AWGN protocol for fixed σ,
    `eval_rng(name, setting)` for everything else."""
    if isinstance(degradation, AWGN) and degradation.sigma is not None:
        return awgn_benchmark_noise(clean, degradation.sigma)
    return degradation(clean, eval_rng(name, degradation.setting()))
