"""Blind σ estimation on Set12: its error, and what it does to blind denoising at low σ.

    python benchmarks/noise_estimate.py            # the four tables (≈ 3.5 min)

Table 1: mean and largest error of `estimate_sigma` over the 12 images at each σ (AWGN from
numpy seed 0 per image, not clipped; σ = 0 is the clean image), on weak-texture patches (the
default) and on all patches (Chen et al. alone). Table 2: PSNR of `denoise-gray` with σ given
and with σ estimated each way, against the noisy input. Table 3: the same estimates on the
correlated camera noise of `-d camera` (every 7th CBSD68 image), against the noise's
per-pixel std, the estimate at half resolution and whether the runtime flags the noise as
correlated, and `denoise-color`'s PSNR with each estimate and with twice the default one.
Table 4: how many images the runtime's rule (`is_correlated`) flags, per test set and degradation, and the
largest half-resolution σ among them (clean, AWGN and camera noise).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from PIL import Image

import restore
from restore.data import awgn_benchmark_noise
from restore.data.degradations import degradation_from_spec, degrade_for_eval
from restore.metrics import psnr
from restore.runtime.noise import estimate_sigma, half_resolution_sigma, is_correlated

# the same data root as the other benchmarks (RESTORE_SHARED, else ../shared beside the repository)
DATA = Path(os.environ.get("RESTORE_SHARED") or Path(__file__).resolve().parents[2] / "shared") / "data" / "test"


def noisy(clean: np.ndarray, sigma: float) -> np.ndarray:
    return awgn_benchmark_noise(clean, sigma).astype(np.float32) if sigma else clean


def error_table(images, sigmas) -> None:
    print("| σ | weak-texture patches: mean / largest error | all patches: mean / largest error |")
    print("|---|---|---|")
    for sigma in sigmas:
        cells = []
        for weak in (True, False):
            errors = np.array([estimate_sigma(noisy(c, sigma), weak_texture=weak) - sigma for c in images])
            cells.append(f"{errors.mean():+.2f} / {np.abs(errors).max():.2f}")
        print(f"| {sigma} | {cells[0]} | {cells[1]} |")


def denoising_table(images, sigmas) -> None:
    model = restore.load("denoise-gray")
    print("| σ | noisy input | σ given | σ estimated (weak-texture) | σ estimated (all patches) |")
    print("|---|---|---|---|---|")
    for sigma in sigmas:
        rows = []
        for clean in images:
            y = noisy(clean, sigma)
            run = lambda s: psnr(model.restore_array(y[..., None], sigma=s)[..., 0], clean, data_range=1.0)
            rows.append([psnr(y, clean, data_range=1.0) if sigma else np.inf, run(float(sigma)),
                         run(estimate_sigma(y)), run(estimate_sigma(y, weak_texture=False))])
        mean = np.mean(rows, axis=0)
        print(f"| {sigma} | " + " | ".join("clean" if np.isinf(v) else f"{v:.2f}" for v in mean) + " |")


def camera_table(paths) -> None:
    model, camera = restore.load("denoise-color"), degradation_from_spec("camera")
    print("| image | noise std | neighbour correlation | estimate: weak-texture / all patches | half-resolution σ | flagged | PSNR: weak-texture / all patches / 2 × weak-texture |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for path in paths:
        clean = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
        y = degrade_for_eval(clean, path.name, camera).astype(np.float32)
        weak, every = estimate_sigma(y), estimate_sigma(y, weak_texture=False)
        scores = [psnr(model.restore_array(y, sigma=s), clean, data_range=1.0) for s in (weak, every, 2 * weak)]
        noise = (y - clean).astype(np.float64)
        # 1 − E[(n(x+1) − n(x))²] / 2 var: 0 for white noise
        correlation = 1 - np.mean(np.diff(noise, axis=1) ** 2) / (2 * noise.var())
        half = half_resolution_sigma(y)
        flagged = is_correlated(weak, half)
        rows.append([noise.std() * 255, correlation, weak, every, half, flagged, *scores])
        print(f"| {path.name} | {rows[-1][0]:.2f} | {correlation:.2f} | {weak:.2f} / {every:.2f} | {half:.2f} | "
              f"{'yes' if flagged else 'no'} | " + " / ".join(f"{v:.2f}" for v in scores) + " |")
    m = np.mean(rows, axis=0)
    print(f"| mean | {m[0]:.2f} | {m[1]:.2f} | {m[2]:.2f} / {m[3]:.2f} | {m[4]:.2f} | {int(m[5] * len(rows))} of {len(rows)} | "
          f"{m[6]:.2f} / {m[7]:.2f} / {m[8]:.2f} |")


def detection_table(sets: dict[str, list[Path]]) -> None:
    kinds = ["clean", "awgn:3", "awgn:5", "awgn:10", "awgn:25", "camera", "camera:jpeg"]
    print("| test set | " + " | ".join(kinds) + " |")
    print("|---|" + "---|" * len(kinds))
    for name, paths in sets.items():
        cells = []
        for kind in kinds:
            flagged, largest = 0, 0.0
            for path in paths:
                clean = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
                if kind == "clean":
                    y = clean
                elif kind.startswith("awgn"):
                    y = noisy(clean, float(kind.split(":")[1]))
                else:
                    y = degrade_for_eval(clean, path.name, degradation_from_spec(kind)).astype(np.float32)
                half = half_resolution_sigma(y)
                flagged += is_correlated(estimate_sigma(y), half)
                largest = max(largest, half)
            cells.append(f"{flagged} ({largest:.1f})")
        print(f"| {name} ({len(paths)}) | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="folder holding Set12/ and CBSD68/")
    args = parser.parse_args()
    set12, cbsd68 = sorted((args.data / "Set12").glob("*.png")), sorted((args.data / "CBSD68").glob("*.png"))
    if not set12 or not cbsd68:
        raise SystemExit(f"error: no Set12/ or CBSD68/ PNG images under {args.data}")
    images = [np.asarray(Image.open(p).convert("L"), dtype=np.float32) / 255 for p in set12]
    error_table(images, [0, 2, 5, 15, 25, 50, 75])
    print()
    denoising_table(images, [0, 2, 5, 10, 25])
    print()
    camera_table(cbsd68[::7])
    print()
    rain100h = sorted((args.data.parent / "rain/Rain100H/norain").glob("*.png"))[::4]
    detection_table({"CBSD68": cbsd68, "LIVE1": sorted((args.data / "LIVE1").glob("*")), "Rain100H clean, every 4th": rain100h})


if __name__ == "__main__":
    main()
