"""What training and search share: run directories, metric logs (and dropping the rows a
killed run logged after its last checkpoint), the cosine schedule, progress reporting and
process-group setup for torchrun (DDP)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from restore.config import save_config
from restore.errors import RestoreError
from restore.atomic import TEMP_SUFFIX, atomic_write
from restore.runtime.backends import resolve_device

NO_DATA = "no training folders given: pass --data DIR (e.g. --data ../shared/data/train/Train400)"

CHECKPOINT_NAME = "checkpoint.safetensors"  # the one resumable file of a run, overwritten
METRICS_NAME = "metrics.csv"
LOG_NAME = "log.txt"


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
    local: int = 0  # rank among this machine's processes: the GPU a CUDA process takes

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> range:
        """This process's slice of a global batch of n items (equal sizes required)."""
        if n % self.world:
            raise RestoreError(f"batch {n} is not divisible by the {self.world} processes")
        per = n // self.world
        return range(self.rank * per, (self.rank + 1) * per)


def init_distributed(device: str = "cpu") -> Dist:
    """Join the torchrun process group when launched by torchrun: NCCL when the processes
    train on CUDA GPUs, gloo when they train on the CPU (whatever hardware the machine has;
    NCCL cannot reduce CPU tensors)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local=int(os.environ.get("LOCAL_RANK", "0")))


def init_process(device: str) -> tuple[Dist, torch.device]:
    """Where this training or search process runs: its place in the torchrun group (if any)
    and its torch device, for a user's --device ("auto", "cpu", "cuda", "cuda:N"). A device
    that is not there is a one-line error, raised before the run writes anything."""
    resolved = resolve_device(device)
    d = init_distributed(resolved)
    try:
        return d, process_device(resolved, d)
    except RestoreError:
        if dist.is_initialized():  # leave no group behind a refused start
            dist.destroy_process_group()
        raise


def process_device(device: str, d: Dist) -> torch.device:
    """This process's torch device for a resolved --device (`restore.runtime.backends.resolve_device`).

    Under torchrun a plain "cuda" means one GPU per process: the one of its local rank."""
    chosen = torch.device(device)
    if chosen.type == "cuda" and chosen.index is None and d.world > 1:
        if d.local >= torch.cuda.device_count():
            raise RestoreError(f"torchrun started more processes on this machine than its {torch.cuda.device_count()} "
                               "CUDA GPU(s): start one per GPU, or train on the CPU with --device cpu")
        chosen = torch.device("cuda", d.local)
    if chosen.type == "cuda" and chosen.index is not None:
        torch.cuda.set_device(chosen)  # NCCL and the default stream follow the current device
    return chosen


def stack_batch(items: Sequence[tuple[torch.Tensor, torch.Tensor]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(degraded, clean) patch pairs → the two batches on `device`. The patches are cut and
    degraded on the CPU (seeded per step and item), so data stay identical on any device."""
    x = torch.stack([a for a, _ in items]).to(device, non_blocking=True)
    y = torch.stack([b for _, b in items]).to(device, non_blocking=True)
    return x, y


@contextlib.contextmanager
def leaving_process_group(d: Dist) -> Iterator[None]:
    """Close the process group before the interpreter exits.

    Rank 0 still validates and writes weights after the last step; a rank that exits
    meanwhile leaves gloo's sockets to its interpreter's shutdown (the likely cause of a
    rank's SIGABRT seen once in CI). After a clean run every rank waits for the others, then
    the group is destroyed explicitly. After an error there is no barrier: the other ranks
    may never reach it."""
    finished = False
    try:
        yield
        finished = True
    finally:
        if d.world > 1 and dist.is_initialized():
            if finished:
                dist.barrier()
            dist.destroy_process_group()


class MetricLog:
    """Append-only CSV of metrics; survives restarts (a resumed run keeps appending after
    `RunDir.truncate_logs` has dropped the rows the checkpoint does not cover)."""

    def __init__(self, path: Path, fields: list[str]):
        self.path, self.fields = path, fields
        if not path.exists():
            atomic_write(path, _csv_line(fields))

    @property
    def header(self) -> str:
        """The header line, terminator included."""
        return _csv_line(self.fields)

    def write(self, **row) -> None:
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerow([row.get(f, "") for f in self.fields])


def _csv_line(values: Sequence) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerow(values)
    return buf.getvalue()


# --------------------------------------------------------------------------- log truncation
# The step of a log line: an int (kept if <= the checkpoint's step), None for a line that
# belongs to no step (kept), math.inf for a damaged line (dropped).
StepOf = Callable[[str], "float | None"]

_TEXT_STEP = re.compile(r"^\S+ \S+ step (\d+)\b")  # "<date> <time> step N…" (RunDir.log)


def csv_step(line: str) -> float | None:
    try:
        return int(line.split(",", 1)[0])
    except ValueError:
        return math.inf


def jsonl_step(line: str) -> float | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf


def text_log_step(line: str) -> float | None:
    m = _TEXT_STEP.match(line)
    return int(m.group(1)) if m else None


def drop_rows_after(path: Path, step: int, step_of: StepOf, *, header: str | None = None) -> int:
    """Keep only the lines of `path` logged at or before `step`, rewriting it atomically.

    A killed run replays the steps after its last checkpoint, so their rows would be
    logged twice. An unterminated last line (a kill during an append) is dropped too.
    With `header` (a whole line, terminator included) the first line is the header: kept
    if it is one, restored if a kill damaged it. Kept lines are written back byte for
    byte; the file is not touched when nothing changes. Returns the number of lines dropped.
    """
    if not path.exists():
        return 0
    raw = path.read_bytes()
    complete = raw[: raw.rfind(b"\n") + 1]
    lines = complete.splitlines(keepends=True)
    head: list[bytes] = []
    if header is not None:
        head = [header.encode("utf-8")]
        if lines and step_of(_text(lines[0])) in (None, math.inf):  # the header, or what a kill left of it
            head = [lines[0]] if lines[0].rstrip(b"\r\n") == head[0].rstrip(b"\r\n") else head
            lines = lines[1:]
    keep = [ln for ln in lines if (s := step_of(_text(ln))) is None or s <= step]
    out = head + keep
    if len(keep) < len(lines) or len(complete) < len(raw) or not raw.startswith(head[0] if head else b""):
        atomic_write(path, b"".join(out))
    return len(lines) - len(keep)


def _text(line: bytes) -> str:
    return line.decode("utf-8", errors="replace").rstrip("\r\n")


# --------------------------------------------------------------------------- run directory


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
        with open(self.path / LOG_NAME, "a", encoding="utf-8") as fh:
            fh.write(f"{stamp} {message}\n")

    def recover(self, step: int, *, metrics_header: str | None = None, jsonl: Sequence[str] = ()) -> int:
        """Tidy what a killed run left before continuing from `step`: the temp files of
        interrupted atomic writes, and the log rows after `step` (see `truncate_logs`)."""
        if not self.main:
            return 0
        for stale in self.path.glob(f".*{TEMP_SUFFIX}"):
            stale.unlink(missing_ok=True)
        return self.truncate_logs(step, metrics_header=metrics_header, jsonl=jsonl)

    def truncate_logs(self, step: int, *, metrics_header: str | None = None, jsonl: Sequence[str] = ()) -> int:
        """Drop what was logged after `step` (the checkpoint being resumed, 0 without one)
        from metrics.csv, the step lines of log.txt and the given JSON-lines logs: a
        resumed run logs those steps again. Main process only; returns the rows dropped."""
        if not self.main:
            return 0
        dropped = drop_rows_after(self.path / METRICS_NAME, step, csv_step, header=metrics_header)
        drop_rows_after(self.path / LOG_NAME, step, text_log_step)
        for name in jsonl:
            drop_rows_after(self.path / name, step, jsonl_step)
        return dropped


# --------------------------------------------------------------------------- progress


def format_duration(seconds: float) -> str:
    """3h12m, 12m05s, 45s, 2d03h."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def _format_value(v) -> str:
    return f"{v:.5g}" if isinstance(v, float) else str(v)


class ProgressLog:
    """Progress of a run in every setting.

    Each logged step becomes one line in log.txt carrying the progress and an ETA —
    ``step 1025/20000 (5.1%) loss=0.0021 … eta 3h12m`` — so a background run (nohup, no
    terminal) can be followed with `tail -f`. With `show` on, the line also goes to stderr
    when stderr is not a terminal; on a terminal a rich progress bar is shown instead.
    The ETA uses the rate of this process (steps done since it started or resumed),
    validation time included.
    """

    def __init__(self, run: RunDir, total: int, start: int, description: str, show: bool = True,
                 clock: Callable[[], float] = time.monotonic):
        self.run, self.total, self.start, self.description = run, total, start, description
        self.show = show
        self.tty = show and sys.stderr.isatty()
        self.clock = clock
        self.t0 = clock()
        self._bar = None
        self._task = None

    def __enter__(self) -> "ProgressLog":
        self.t0 = self.clock()
        if self.tty:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"),
                                 TimeRemainingColumn(), transient=False, refresh_per_second=2)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total, completed=self.start, info="")
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None

    def eta(self, step: int) -> float | None:
        """Seconds to `total` at this process's rate so far (None before its first step)."""
        done = step - self.start
        if done <= 0:
            return None
        return (self.total - step) * (self.clock() - self.t0) / done

    def status(self, step: int) -> str:
        return f"step {step}/{self.total} ({100.0 * step / max(self.total, 1):.1f}%)"

    def line(self, step: int, fields: dict) -> str:
        eta = self.eta(step)
        parts = [self.status(step), *(f"{k}={_format_value(v)}" for k, v in fields.items()),
                 f"eta {'?' if eta is None else format_duration(eta)}"]
        return " ".join(parts)

    def log_step(self, step: int, fields: dict, **shown) -> str:
        """Log a step (log.txt, plain stderr) and move the bar; `shown` are the bar's fields."""
        line = self.line(step, fields)
        self.run.log(line)
        if self._bar is not None:
            info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items())
            self._bar.update(self._task, completed=step, info=info)
        elif self.show:
            self._echo(line)
        return line

    def note(self, message: str) -> None:
        """A message for log.txt and the user (above the bar, or a plain stderr line)."""
        self.run.log(message)
        if self._bar is not None:
            self._bar.console.print(message, markup=False, highlight=False)
        elif self.show:
            self._echo(message)

    def _echo(self, text: str) -> None:
        if self.run.main:
            print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}", file=sys.stderr, flush=True)
