#!/usr/bin/env python
"""Validation curves of the zoo's training runs (training/<run>/metrics.csv).

Writes docs/figures/training_curves.png (one panel per run: validation PSNR and training
loss against the step) and prints a Markdown row per run with the validation PSNR at a few
steps, for docs/RESULTS.md §3.

    python benchmarks/training_curves.py
    python benchmarks/training_curves.py --runs denoise-gray denoise-gray-searched --out /tmp/c.png
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAINING = REPO / "training"


def read_metrics(run: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(step, validation PSNR) and (step, training loss) rows of a run's metrics.csv."""
    val, loss = [], []
    with open(run / "metrics.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            step = int(row["step"])
            if row.get("val_psnr"):
                val.append((step, float(row["val_psnr"])))
            if row.get("loss"):
                loss.append((step, float(row["loss"])))
    return val, loss


def zoo_runs() -> list[str]:
    """Training runs (not searches) that have logged metrics."""
    return sorted(p.parent.name for p in TRAINING.glob("*/metrics.csv") if not p.parent.name.startswith("search-"))


def milestones(val: list[tuple[int, float]], count: int = 8) -> list[tuple[int, float]]:
    """About `count` evenly spread validation points, always with the first and the last."""
    if len(val) <= count:
        return val
    idx = sorted({round(i * (len(val) - 1) / (count - 1)) for i in range(count)})
    return [val[i] for i in idx]


def markdown_rows(runs: list[str]) -> str:
    lines = ["| run | steps logged | validation PSNR (dB) by step |", "|---|---|---|"]
    for name in runs:
        val, loss = read_metrics(TRAINING / name)
        last = loss[-1][0] if loss else 0
        points = " · ".join(f"{s}: {p:.2f}" for s, p in milestones(val))
        lines.append(f"| {name} | {last} | {points or '–'} |")
    return "\n".join(lines)


def plot(runs: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 3
    rows = math.ceil(len(runs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, runs):
        val, loss = read_metrics(TRAINING / name)
        if val:
            ax.plot(*zip(*val), color="tab:blue", marker=".", label="validation PSNR")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("PSNR (dB)", color="tab:blue")
        if loss:
            twin = ax.twinx()
            twin.plot(*zip(*loss), color="tab:gray", alpha=0.4, linewidth=0.8)
            twin.set_yscale("log")
            twin.set_ylabel("training loss", color="tab:gray")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(runs):]:
        ax.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="*", default=None, help="run folders under training/ (default: all)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "figures" / "training_curves.png")
    args = parser.parse_args()
    runs = args.runs or zoo_runs()
    plot(runs, args.out)
    print(markdown_rows(runs))
    print(f"\nfigure: {args.out}")


if __name__ == "__main__":
    main()
