"""What training and search share: run directories, metric logs, the cosine schedule,
progress display and process-group setup for torchrun (DDP)."""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from restore.config import save_config
from restore.errors import RestoreError

CHECKPOINT_NAME = "checkpoint.safetensors"  # the one resumable file of a run, overwritten


def cosine_lr(step: int, total: int, lr: float, lr_min: float) -> float:
    """Cosine annealing from lr to lr_min over `total` steps; a pure function of the step,
    so a resumed run needs no scheduler state."""
    t = min(max(step, 0), total) / max(total, 1)
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * t))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> range:
        """This process's slice of a global batch of n items (equal sizes required)."""
        if n % self.world:
            raise RestoreError(f"batch {n} is not divisible by the {self.world} processes")
        per = n // self.world
        return range(self.rank * per, (self.rank + 1) * per)


def init_distributed() -> Dist:
    """Join the torchrun process group when launched by torchrun (gloo on CPU, NCCL on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return Dist(rank=dist.get_rank(), world=dist.get_world_size())


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


class MetricLog:
    """Append-only CSV of metrics; survives restarts (a resumed run keeps appending)."""

    def __init__(self, path: Path, fields: list[str]):
        self.path, self.fields = path, fields
        if not path.exists():
            with open(path, "w", newline="") as fh:
                csv.writer(fh).writerow(fields)

    def write(self, **row) -> None:
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerow([row.get(f, "") for f in self.fields])


class RunDir:
    """A run directory: resolved config, logs, the resumable checkpoint, outputs."""

    def __init__(self, path: str | Path, *, main: bool = True):
        self.path = Path(path)
        if main:
            self.path.mkdir(parents=True, exist_ok=True)
        self.main = main

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_NAME

    def save_config(self, cfg) -> None:
        if self.main:
            save_config(cfg, self.path / "config.json")

    def log(self, message: str) -> None:
        if not self.main:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.path / "log.txt", "a", encoding="utf-8") as fh:
            fh.write(f"{stamp} {message}\n")


@contextmanager
def progress_bar(total: int, start: int, description: str, enabled: bool = True):
    """A rich progress bar with ETA; yields update(step, **fields). Plain when not a TTY."""
    if not enabled:
        yield lambda step, **fields: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, transient=False, disable=not sys.stderr.isatty(), refresh_per_second=2) as bar:
        task = bar.add_task(description, total=total, completed=start, info="")

        def update(step: int, **fields):
            info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
            bar.update(task, completed=step, info=info)

        yield update
