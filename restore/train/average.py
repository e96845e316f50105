"""Average the weights of runs that share an architecture and a starting point ("model soup").

Two runs continued from the same weights end in the same basin of the loss; the mean of
their weights often scores at least as well as either (Wortsman et al., "Model soups",
2022; SWA). It costs nothing at inference: the result is one network of the same size.

    python -m restore.train.average training/derain-t3b training/derain-t3c \
        --weights best.safetensors --weights last.safetensors -o training/derain-soup

writes the mean weights as ``best.safetensors`` with the first run's ``genotype.json`` and
``config.json``, so the output folder loads, evaluates and publishes like a training run.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import List, Optional

import torch
import typer

from restore.errors import RestoreError
from restore.models.genotype import load_genotype
from restore.train.checkpoint import save_tensors
from restore.zoo.registry import read_weights


def average_state_dicts(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of float tensors (in float64, then the original dtype); integer
    buffers (e.g. counters) are taken from the first."""
    if not states:
        raise RestoreError("nothing to average")
    first = states[0]
    for i, other in enumerate(states[1:], start=2):
        if other.keys() != first.keys():
            diff = sorted(other.keys() ^ first.keys())[:3]
            raise RestoreError(f"weights #{i} hold different tensors than #1 (e.g. {diff}): not the same architecture")
        for k, t in other.items():
            if t.shape != first[k].shape:
                raise RestoreError(f"weights #{i}: {k} has shape {tuple(t.shape)}, #1 has {tuple(first[k].shape)}")
    out = {}
    for k, t in first.items():
        if t.dtype.is_floating_point:
            out[k] = (sum(s[k].double() for s in states) / len(states)).to(t.dtype)
        else:
            out[k] = t.clone()
    return out


def average_runs(runs: list[Path], out_dir: Path, weights: list[str] | None = None) -> Path:
    """Average the weights of `runs` (``weights[i]`` names run i's file, ``best.safetensors``
    by default) into `out_dir`, a folder that loads like a run. Refuses different genotypes."""
    runs = [Path(r) for r in runs]
    names = weights or ["best.safetensors"]
    if len(names) not in (1, len(runs)):
        raise RestoreError(f"give one --weights for every run ({len(runs)}) or a single one for all")
    names = names * len(runs) if len(names) == 1 else names
    genotypes = [load_genotype(r / "genotype.json") for r in runs]  # one-line errors for missing/damaged files
    if any(g != genotypes[0] for g in genotypes[1:]):
        raise RestoreError("the runs have different genotypes: only one architecture can be averaged")
    out_dir = Path(out_dir)
    if any(out_dir.resolve() == r.resolve() for r in runs):
        raise RestoreError(f"{out_dir} is one of the inputs: choose a new folder")
    if (out_dir / "best.safetensors").exists():
        raise RestoreError(f"{out_dir / 'best.safetensors'} exists: choose a new folder (nothing is replaced)")
    mean = average_state_dicts([read_weights(_file(r / n)) for r, n in zip(runs, names)])
    out_dir.mkdir(parents=True, exist_ok=True)
    for extra in ("genotype.json", "config.json"):
        if (runs[0] / extra).is_file():
            shutil.copyfile(runs[0] / extra, out_dir / extra)
    sources = ", ".join(f"{r}/{n}" for r, n in zip(runs, names))
    (out_dir / "SOURCES.txt").write_text(f"mean of {len(runs)} weight files: {sources}\n", encoding="utf-8")
    return save_tensors(out_dir / "best.safetensors", mean)


def _file(path: Path) -> Path:
    if not path.is_file():
        raise RestoreError(f"{path} not found")
    return path


def main(
    runs: List[Path] = typer.Argument(..., help="Run folders with the same genotype.json."),
    out: Path = typer.Option(..., "-o", "--out", help="New folder for the averaged weights."),
    weights: Optional[List[str]] = typer.Option(None, "--weights", help="File per run (default best.safetensors)."),
):
    try:
        path = average_runs(runs, out, weights)
    except RestoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    typer.echo(f"wrote {path}")


if __name__ == "__main__":
    typer.run(main)
