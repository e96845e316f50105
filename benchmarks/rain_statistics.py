#!/usr/bin/env python
"""How close is our synthetic rain to Rain100H's? Statistics of the rain layer.

For Rain100H the rain layer is `rainy − clean` of its 100 pairs; for each synthetic style it
is `rain(clean) − clean` over BSD200 backgrounds (the de-raining training images). Prints a
Markdown table (mean, coverage, percentiles of the residual averaged over RGB, input PSNR)
and writes a figure of 150×150 residual crops side by side (docs/figures/rain_styles.png),
the evidence behind the `torrent` style of restore/data/rain.py.

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
STYLES = ("light", "heavy", "torrent")
COLUMNS = ("mean", "> 0.1", "> 0.3", "p10", "p50", "p90", "p99", "input PSNR (dB)")


def residual_stats(rainy: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """One row of COLUMNS for one image pair (float images in [0, 1], H×W×3)."""
    d = (rainy - clean).mean(axis=2)
    mse = float(np.mean((rainy - clean) ** 2))
    return np.array([d.mean(), (d > 0.1).mean(), (d > 0.3).mean(), *np.percentile(d, [10, 50, 90, 99]),
                     10 * np.log10(1.0 / max(mse, 1e-12))])


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
    lines = ["| rain layer | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    for name, v in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{x:.3f}" for x in v[:-1]) + f" | {v[-1]:.2f} |")
    return "\n".join(lines)


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
