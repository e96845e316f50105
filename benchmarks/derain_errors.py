#!/usr/bin/env python
"""Where a de-raining model's error on Rain100H sits: fine detail or the broad brightness.

For each model, over Rain100H pairs (every `--stride`-th), the PSNR of its output as scored by
`restore eval` (whole image, clipped to [0, 1]), then the PSNR it would have if one part of its
error were taken away by an oracle:

- "no colour bias": the image's mean error per channel (a constant colour offset);
- "no broad error": the error blurred by a Gaussian of σ = 8 px (anything broader than a streak).

The last columns test whether that broad error follows the amount of rain: the correlation,
over images, of the mean error (output − clean) with the mean rain (rainy − clean), and the mean
error on the quarter of images with the least and with the most rain. A model that learnt
"how much rain there is" from a narrower range than the test set's over-removes on light images
(negative) and under-removes on heavy ones (positive). This is the evidence behind the
`downpour` style of restore/data/rain.py.

    python benchmarks/derain_errors.py -m derain
    python benchmarks/derain_errors.py -m derain -m training/derain-downpour --stride 1
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import numpy as np

from restore.data.datasets import PairedFolder
from restore.data.rain import _gauss_transfer  # the Gaussian's transfer function on an rfft2 grid
from restore.io import read_image

SHARED = Path(os.environ.get("RESTORE_SHARED") or Path(__file__).resolve().parents[2] / "shared")
COLUMNS = ("PSNR", "no colour bias", "no broad error", "corr(error, rain)", "error, least rain", "error, most rain")


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Per-channel Gaussian blur of an H×W×C image, by FFT with reflected borders."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((h // 2, h // 2), (w // 2, w // 2), (0, 0)), mode="reflect")
    transfer = _gauss_transfer(padded.shape[0], padded.shape[1], sigma)[..., None]
    blurred = np.fft.irfft2(np.fft.rfft2(padded, axes=(0, 1)) * transfer, s=padded.shape[:2], axes=(0, 1))
    return blurred[h // 2 : h // 2 + h, w // 2 : w // 2 + w]


def _psnr(error: np.ndarray) -> float:
    return 10 * math.log10(1.0 / max(float(np.mean(error**2)), 1e-12))


def error_parts(output: np.ndarray, clean: np.ndarray, rainy: np.ndarray) -> tuple[float, float, float, float, float]:
    """PSNR, PSNR without the colour bias, PSNR without the broad error, mean error, mean rain."""
    error = np.clip(output, 0.0, 1.0) - clean
    return (_psnr(error), _psnr(error - error.mean(axis=(0, 1))), _psnr(error - gaussian_blur(error, 8.0)),
            float(error.mean()), float((rainy - clean).mean()))


def pair_paths(stride: int, limit: int | None) -> list[tuple[Path, Path]]:
    """(rainy, clean) paths of every `stride`-th Rain100H pair, sorted by file name."""
    root = SHARED / "data/rain/Rain100H"
    return sorted(PairedFolder(root / "rain", root / "norain").pairs)[::stride][:limit]


def pairs(stride: int, limit: int | None):
    for rainy, clean in pair_paths(stride, limit):
        yield read_image(rainy).pixels, read_image(clean).pixels


def score(model: str, stride: int, limit: int | None) -> np.ndarray:
    """One row of COLUMNS for `model` (a zoo name or run folder)."""
    import restore

    restorer = restore.load(model)
    parts = np.array([error_parts(restorer(rainy), clean, rainy) for rainy, clean in pairs(stride, limit)])
    error, rain = parts[:, 3], parts[:, 4]
    order = np.argsort(rain)
    quarter = max(len(order) // 4, 1)
    corr = float(np.corrcoef(error, rain)[0, 1]) if len(order) > 1 else float("nan")
    return np.array([*parts[:, :3].mean(axis=0), corr, error[order[:quarter]].mean(), error[order[-quarter:]].mean()])


def markdown(rows: dict[str, np.ndarray]) -> str:
    lines = ["| model | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    for name, v in rows.items():
        lines.append(f"| {name} | {v[0]:.2f} | {v[1]:.2f} | {v[2]:.2f} | {v[3]:.2f} | {v[4]:+.3f} | {v[5]:+.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", action="append", help="zoo name or run folder (repeat)")
    parser.add_argument("--stride", type=int, default=2, help="every N-th Rain100H pair (sorted by name)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many pairs")
    args = parser.parse_args()
    models = args.model or ["derain"]
    count = len(pair_paths(args.stride, args.limit))
    print(f"Rain100H, {count} pairs (every {args.stride}), whole images")
    print(markdown({m: score(m, args.stride, args.limit) for m in models}))


if __name__ == "__main__":
    main()
