#!/usr/bin/env python
"""Peak memory of restoring an 8000×6000 RGB photo on the CPU (issue #8: bounded memory).

It writes a synthetic noisy 8000×6000 RGB PNG, then runs the real command in a child
process and reads the child's peak resident set size from the kernel
(`resource.getrusage(RUSAGE_CHILDREN).ru_maxrss` of a small launcher process, see
`LAUNCHER`):

    restore denoise BIG.png -o OUT [--model RUN] --tile 64

A first child restores a 64×48 image with the same model, so its peak is the fixed cost
(Python, torch, the model); the difference is what the image itself costs. The budget is
2.5 GB of peak RSS; the script exits with status 1 above it.

    python benchmarks/memory_8k.py                      # the shipped default model
    python benchmarks/memory_8k.py --model tiny         # a tiny genotype built here (random weights)
    python benchmarks/memory_8k.py --model tiny --json docs/results/memory_8k.json

`--model default` is what a user runs, but on 2 shared CPU cores the default model
(~400 GFLOPs per megapixel, ×3 for a colour image restored channel by channel) needs
about an hour for 48 MP; `--model tiny` (8 channels, noise-map input like the default,
so σ estimation, channel-by-channel colour and tiling all run the same code) finishes in
minutes. Memory that scales with the image (the decoded image, the σ map, the output and
blend buffers, the σ estimate) does not depend on the model; the model only adds its
activations for one batch of tiles, which the `--size` option can measure for the
default model on a smaller image. The result says which model was used.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BUDGET_MB = 2500

TINY_GENOTYPE = {
    "format": "restore-genotype", "version": 1, "space": "modnas", "name": "tiny-memory-bench",
    "head_channels": 8, "stages": 1, "in_channels": 1, "out_channels": 1, "noise_map": True,
    "encoder": [{"layers": [{"op": "conv_3x3", "channels": 8}], "sample": {"op": "area", "channels": 8}}],
    "decoder": [
        {"layers": [{"op": "conv_3x3", "channels": 8}], "sample": {"op": "nearest", "channels": 8}},
        {"layers": [{"op": "res_block_3x3", "channels": 8}], "sample": None, "fuse_channels": 8},
    ],
}


def tiny_model_run(folder: Path) -> Path:
    """A run folder (genotype.json + best.safetensors) that `restore denoise -m` accepts."""
    sys.path.insert(0, str(REPO))
    import torch
    from safetensors.torch import save_file

    from restore.models.build import build
    from restore.models.genotype import from_dict, save_genotype

    genotype = from_dict(TINY_GENOTYPE)
    torch.manual_seed(0)
    net = build(genotype)
    folder.mkdir(parents=True, exist_ok=True)
    save_genotype(genotype, folder / "genotype.json")
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(folder / "best.safetensors"))
    return folder


def noisy_photo(path: Path, width: int, height: int, sigma: float = 25.0, seed: int = 0) -> Path:
    """A smooth colour scene plus Gaussian noise, written in row bands (little memory here)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = np.empty((height, width, 3), np.uint8)
    xx = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    for top in range(0, height, 256):
        rows = min(256, height - top)
        yy = np.linspace(top / height, (top + rows) / height, rows, dtype=np.float32)[:, None]
        band = np.stack([0.5 + 0.35 * np.sin(9 * xx + 4 * yy + c) * np.cos(7 * yy - c) for c in range(3)], axis=2)
        band = band * 255 + rng.normal(0, sigma, band.shape).astype(np.float32)
        pixels[top : top + rows] = np.clip(np.rint(band), 0, 255).astype(np.uint8)
    Image.fromarray(pixels, "RGB").save(path, compress_level=1)
    return path


# A child's peak RSS counts the RSS of the process it was forked from until it execs (Linux
# folds the old address space's high-water mark into ru_maxrss), and this script holds
# torch and a 48 MP image. So each `restore` run is started by a small launcher process
# and its peak is the launcher's getrusage(RUSAGE_CHILDREN).ru_maxrss: that one child only.
LAUNCHER = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")


def run_cli(args: list[str], threads: int) -> tuple[float, float, str]:
    """Run `restore ARGS` in a child; return (seconds, peak RSS in MB, last line it printed)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", LAUNCHER, sys.executable, "-m", "restore", *args], env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"`restore {' '.join(args)}` failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    *lines, peak_kb = done.stdout.strip().splitlines()
    return seconds, int(peak_kb) / 1024, lines[-1] if lines else ""  # Linux reports kB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("default", "tiny"), default="default",
                        help="default: the shipped default model (restore.load()); tiny: an 8-channel genotype built here")
    parser.add_argument("--width", type=int, default=8000)
    parser.add_argument("--height", type=int, default=6000)
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of the child (OMP_NUM_THREADS)")
    parser.add_argument("--json", type=Path, help="also write the result as JSON here")
    parser.add_argument("--workdir", type=Path, help="keep the image and output here (default: a temp folder)")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="restore-mem-"))
    work.mkdir(parents=True, exist_ok=True)
    model_args: list[str] = []
    if args.model == "tiny":
        model_args = ["--model", str(tiny_model_run(work / "tiny-run"))]

    small = noisy_photo(work / "small.png", 64, 48)
    big = work / f"photo_{args.width}x{args.height}.png"
    if not big.exists():
        t0 = time.perf_counter()
        noisy_photo(big, args.width, args.height)
        print(f"wrote {big} ({big.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    common = ["-o", str(work / "out"), "--tile", str(args.tile), "--overwrite", *model_args]
    _, baseline, _ = run_cli(["denoise", str(small), *common], args.threads)
    command = ["denoise", str(big), *common]
    seconds, peak, line = run_cli(command, args.threads)

    from PIL import Image

    with Image.open(work / "out" / f"{big.stem}_denoise.png") as out:
        assert out.size == (args.width, args.height) and out.mode == "RGB", (out.size, out.mode)
    image_mb = args.width * args.height * 3 * 4 / 2**20  # the image as float32
    result = {
        "benchmark": "memory_8k",
        "model": "default (restore.load())" if args.model == "default" else "tiny (8-channel MoD-NAS genotype, random weights)",
        "image": f"{args.width}x{args.height} RGB",
        "tile": args.tile,
        "threads": args.threads,
        "peak_rss_mb": round(peak),
        "baseline_rss_mb": round(baseline),
        "extra_mb": round(peak - baseline),
        "float32_image_mb": round(image_mb),
        "extra_per_float32_image": round((peak - baseline) / image_mb, 2),
        "seconds": round(seconds, 1),
        "budget_mb": BUDGET_MB,
        "within_budget": peak < BUDGET_MB,
        "command": "python benchmarks/memory_8k.py " + " ".join(sys.argv[1:]),
        "child_command": "restore " + " ".join(command).replace(str(work), "WORK"),
        "cli_line": line.replace(str(work), "WORK"),
        "python": platform.python_version(),
        "cpu": f"{os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result, indent=2))
    print(f"| {result['image']} | {result['model']} | tile {args.tile}, {args.threads} thread(s) | "
          f"{result['peak_rss_mb']} MB peak RSS ({result['baseline_rss_mb']} MB fixed + {result['extra_mb']} MB "
          f"= {result['extra_per_float32_image']}× the float32 image) | {result['seconds']} s | `{result['command']}` |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if not result["within_budget"]:
        sys.exit(f"peak RSS {peak:.0f} MB is above the budget of {BUDGET_MB} MB")


if __name__ == "__main__":
    main()
