#!/usr/bin/env python
"""How close is our synthetic rain to Rain100H's? Statistics of the rain layer.

For Rain100H the rain layer is `rainy − clean` of its 100 pairs; for each synthetic style it
is `rain(clean) − clean` over BSD200 backgrounds (the de-raining training images). Prints two
Markdown tables: the amount of rain (mean, coverage, percentiles of the residual averaged over
RGB, input PSNR) and its texture (standard deviation, autocorrelation across and along the
streaks, dominant streak angle), and writes a figure of 150×150 residual crops side by side
(docs/figures/rain_styles.png), the evidence behind the `torrent`, `textured` and `downpour` styles of
restore/data/rain.py.

    python benchmarks/rain_statistics.py
    python benchmarks/rain_statistics.py --backgrounds 8 --figure /tmp/rain.png
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from restore.data.rain import RainStreaks
from restore.io import read_image

SHARED = Path(os.environ.get("RESTORE_SHARED") or Path(__file__).resolve().parents[2] / "shared")
REPO = Path(__file__).resolve().parents[1]
STYLES = ("light", "heavy", "torrent", "textured", "downpour")
AMOUNT = ("mean", "> 0.1", "> 0.3", "p10", "p50", "p90", "p99", "input PSNR (dB)")
TEXTURE = ("std", "ac x 2", "ac x 8", "ac y 8", "ac y 32", "ac y 96", "streak angle (°)")
COLUMNS = AMOUNT + TEXTURE


def autocorrelation(d: np.ndarray, dy: int, dx: int) -> float:
    """Normalised autocorrelation of `d` at a shift of (dy, dx) pixels."""
    d = d - d.mean()
    h, w = d.shape
    return float((d[: h - dy, : w - dx] * d[dy:, dx:]).mean() / max((d * d).mean(), 1e-12))


def dominant_angle(d: np.ndarray) -> float:
    """Streak angle from vertical in degrees, magnitude only.

    The orientation of the structure tensor, computed in the Fourier domain: exact
    derivatives below half the Nyquist frequency, so the pixel staircase of a thin slanted
    streak does not bias it, and a round Hann window that hides the crop's borders without
    favouring the axes. Streaks at angle θ put their energy along the frequency direction θ
    from the horizontal axis; the doubled-angle average keeps ±θ from cancelling."""
    h, w = d.shape
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot((yy - (h - 1) / 2) / (h / 2), (xx - (w - 1) / 2) / (w / 2))
    window = 0.5 * (1 + np.cos(np.pi * np.minimum(r, 1.0)))
    power = np.abs(np.fft.fft2((d - d.mean()) * window)) ** 2
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    power[np.hypot(fy, fx) > 0.25] = 0  # near Nyquist the sampled streak aliases off its line
    c, s = (power * (fx**2 - fy**2)).sum(), (power * 2 * fx * fy).sum()
    return abs(float(np.degrees(np.arctan2(s, c)) / 2))


def residual_stats(rainy: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """One row of COLUMNS for one image pair (float images in [0, 1], H×W×3)."""
    d = (rainy - clean).mean(axis=2)
    mse = float(np.mean((rainy - clean) ** 2))
    amount = [d.mean(), (d > 0.1).mean(), (d > 0.3).mean(), *np.percentile(d, [10, 50, 90, 99]),
              10 * np.log10(1.0 / max(mse, 1e-12))]
    texture = [d.std(), autocorrelation(d, 0, 2), autocorrelation(d, 0, 8), autocorrelation(d, 8, 0),
               autocorrelation(d, 32, 0), autocorrelation(d, 96, 0), dominant_angle(d)]
    return np.array(amount + texture)


def rain100h_pairs(limit: int | None):
    root = SHARED / "data/rain/Rain100H"
    for rainy in sorted((root / "rain").glob("*.png"))[:limit]:
        yield read_image(rainy).pixels, read_image(root / "norain" / rainy.name).pixels


def synthetic_pairs(style: str, count: int):
    for i, path in enumerate(sorted((SHARED / "data/train/BSD200").glob("*.png"))[:count]):
        clean = read_image(path).pixels
        yield RainStreaks(style)(clean, np.random.default_rng(i)), clean


def table(backgrounds: int, limit: int | None) -> dict[str, np.ndarray]:
    rows = {"Rain100H (rainy − clean)": np.mean([residual_stats(r, c) for r, c in rain100h_pairs(limit)], axis=0)}
    for style in STYLES:
        rows[f"`rain:{style}` over BSD200"] = np.mean(
            [residual_stats(r, c) for r, c in synthetic_pairs(style, backgrounds)], axis=0)
    return rows


def markdown(rows: dict[str, np.ndarray]) -> str:
    """The amount table, a blank line, then the texture table (same rows)."""
    n = len(AMOUNT)
    amount = ["| rain layer | " + " | ".join(AMOUNT) + " |", "|---|" + "---|" * n]
    texture = ["| rain layer | " + " | ".join(TEXTURE) + " |", "|---|" + "---|" * len(TEXTURE)]
    for name, v in rows.items():
        amount.append(f"| {name} | " + " | ".join(f"{x:.3f}" for x in v[: n - 1]) + f" | {v[n - 1]:.2f} |")
        texture.append(f"| {name} | " + " | ".join(f"{x:.3f}" for x in v[n:-1]) + f" | {v[-1]:.1f} |")
    return "\n".join(amount + [""] + texture)


def figure(out: Path, size: int = 150) -> None:
    """Residual crops, magnified 2×: two Rain100H pairs, then each synthetic style."""
    crops = []
    for rainy, clean in rain100h_pairs(2):
        crops.append((rainy - clean).mean(axis=2)[:size, :size])
    for style in STYLES:
        rainy, clean = next(synthetic_pairs(style, 1))
        crops.append((rainy - clean).mean(axis=2)[:size, :size])
    strip = np.concatenate([np.kron(np.clip(c, 0, 1), np.ones((2, 2))) for c in crops], axis=1)
    from PIL import Image

    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((strip * 255 + 0.5).astype(np.uint8)).save(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backgrounds", type=int, default=30, help="BSD200 images per synthetic style")
    parser.add_argument("--limit", type=int, default=None, help="first N Rain100H pairs only")
    parser.add_argument("--figure", type=Path, default=REPO / "docs/figures/rain_styles.png")
    args = parser.parse_args()
    print(markdown(table(args.backgrounds, args.limit)))
    figure(args.figure)
    print(f"\nfigure: {args.figure} (left to right: Rain100H norain-1, norain-10, then {', '.join(STYLES)})")


if __name__ == "__main__":
    main()
