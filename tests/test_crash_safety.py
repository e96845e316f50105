"""Crash-safe long runs (issue #8, item 4): `restore train` and `restore search` are killed
with SIGKILL at random steps and inside a checkpoint write, resumed, and end exactly where
an uninterrupted run with the same seed ends.

Each killed run is a real process running the CLI (`restore.cli.app` with the same
arguments a user types), forked from the test process so the ~5 s torch import is paid
once; SIGKILL gives it no chance to clean up. The checkpoint-write window is made
deterministic by the RESTORE_TEST_SLOW_CHECKPOINT hook of restore/train/checkpoint.py
(sleep after the temp file is complete, before the rename).

The kill steps are random; the seed is printed in every failure message so a failing
combination can be replayed with RESTORE_CRASH_SEED=<seed>.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from restore.search import make_config, search
from restore.train.checkpoint import load_state, save_state
from restore.train.config import TrainConfig
from restore.train.trainer import train

SEED = int(os.environ.get("RESTORE_CRASH_SEED", time.time_ns() % 100_000))
rng = random.Random(SEED)
TIMEOUT = 120  # seconds any one launch may take before the test gives up


@pytest.fixture(autouse=True)
def _keep_threads():
    """The trainer and searcher set torch's thread count process-wide."""
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module", autouse=True)
def _warm_imports():
    """Import once here what every forked run would import again: the CLI, and the
    torch._dynamo machinery that the first `torch.optim.Adam(...)` pulls in (~3 s)."""
    import restore.cli  # noqa: F401

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


# --------------------------------------------------------------------------- launching


def _cli_child(args: list[str], env: dict[str, str]) -> None:
    os.environ.update(env)
    from restore.cli import app

    app(args, prog_name="restore")  # exits with the command's code


class Launch:
    """A forked process running `restore ARGS`."""

    def __init__(self, args: list[str], **env: str):
        self.args = [str(a) for a in args]
        self.proc = multiprocessing.get_context("fork").Process(target=_cli_child, args=(self.args, env))
        self.proc.start()

    def alive(self) -> bool:
        return self.proc.exitcode is None

    def kill(self) -> None:
        assert self.alive(), f"the run ended (exit {self.proc.exitcode}) before it could be killed [seed {SEED}]"
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join(10)
        assert self.proc.exitcode == -signal.SIGKILL

    def finish(self) -> int:
        self.proc.join(TIMEOUT)
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.join(10)
            pytest.fail(f"`restore {' '.join(self.args)}` did not finish in {TIMEOUT} s [seed {SEED}]")
        return self.proc.exitcode


def wait_until(condition, launch: Launch, what: str, poll: float = 0.005):
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        if not launch.alive():
            pytest.fail(f"the run ended (exit {launch.proc.exitcode}) while waiting for {what} [seed {SEED}]")
        time.sleep(poll)
    pytest.fail(f"timed out waiting for {what} [seed {SEED}]")


def logged_step(run: Path) -> int:
    """The last step in metrics.csv (every step is logged in these runs)."""
    try:
        lines = (run / "metrics.csv").read_text().splitlines()
    except FileNotFoundError:
        return -1
    for line in reversed(lines[1:]):
        head = line.split(",")[0]
        if head.isdigit():
            return int(head)
    return -1


def kill_at_random_step(launch: Launch, run: Path, low: int, high: int) -> int:
    target = rng.randint(low, high)
    wait_until(lambda: logged_step(run) >= target, launch, f"step {target}")
    launch.kill()
    return target


def temp_files(run: Path) -> list[Path]:
    return sorted(run.glob(".checkpoint.safetensors.*.tmp"))


def kill_inside_checkpoint_write(launch: Launch, run: Path) -> Path:
    """Wait for the temp file of a save (the hook then sleeps before the rename) and kill."""
    before = set(temp_files(run))
    new = wait_until(lambda: set(temp_files(run)) - before, launch, "a checkpoint temp file")
    time.sleep(0.3)  # the write itself takes milliseconds; now the process sleeps in the window
    launch.kill()
    (tmp,) = new
    return tmp


def checkpoint_step(run: Path) -> int:
    return int(load_state(run / "checkpoint.safetensors")["step"])


def assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}: {k} differs [seed {SEED}]"


# --------------------------------------------------------------------------- checkpoint files


def test_a_stale_temp_file_is_ignored_and_cleaned(tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    save_state(path, {"step": 1, "w": torch.ones(3)})
    stray = tmp_path / ".checkpoint.safetensors.abc123.tmp"
    stray.write_bytes(b"half a checkpoint")  # what a kill during save_file leaves
    assert load_state(path)["step"] == 1
    save_state(path, {"step": 2, "w": torch.zeros(3)})
    assert not stray.exists() and load_state(path)["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.safetensors"]


# --------------------------------------------------------------------------- training


def test_training_killed_three_times_ends_bit_exact(tiny_genotype, tiny_train_dir, tmp_path):
    cfg = TrainConfig(model=str(tiny_genotype), train_dirs=(str(tiny_train_dir),), degradation="awgn:25", patch=32,
                      batch=4, steps=40, val_holdout=2, val_images=2, val_every=10, checkpoint_every=3, log_every=1,
                      lr=3e-3, ema=0.9, threads=1)
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in cfg.__dict__.items()}))
    run = tmp_path / "killed"
    resume = ["train", "--run", run, "--no-progress"]

    # 1. a random step between checkpoints: the last checkpoint is kept, later steps are replayed
    killed_at = kill_at_random_step(Launch(["train", "--config", cfg_path, *resume[1:]]), run, 4, 12)
    first = checkpoint_step(run)
    assert first % 3 == 0 and 0 < first, f"killed at step >= {killed_at} [seed {SEED}]"

    # 2. inside a checkpoint write: the old checkpoint still loads, the stray temp file is ignored
    tmp = kill_inside_checkpoint_write(Launch(resume, RESTORE_TEST_SLOW_CHECKPOINT="60"), run)
    assert tmp.exists() and checkpoint_step(run) == first

    # 3. a random step again, after the resumed run has checkpointed past the first kill
    kill_at_random_step(Launch(resume), run, first + 4, 30)
    assert checkpoint_step(run) > first

    # resume to the end
    assert Launch(resume).finish() == 0
    assert temp_files(run) == [], "the next save removes stale temp files"
    assert (run / "log.txt").read_text().count("resumed at step") == 3

    train(cfg, tmp_path / "straight", show_progress=False)
    for name in ("last.safetensors", "best.safetensors"):
        assert_same_tensors(load_file(str(tmp_path / "straight" / name)), load_file(str(run / name)), name)
    straight, resumed = (load_state(r / "checkpoint.safetensors") for r in (tmp_path / "straight", run))
    assert_same_tensors(straight["model"], resumed["model"], "model")
    assert_same_tensors(straight["ema"], resumed["ema"], "EMA")
    assert straight["step"] == resumed["step"] == 40 and straight["best_psnr"] == resumed["best_psnr"]


# --------------------------------------------------------------------------- search


def test_search_killed_twice_ends_like_an_uninterrupted_search(tiny_train_dir, tmp_path):
    """`restore search --preset tiny-modnas`, killed at a random step and inside a checkpoint
    write: the resumed search has bit-identical supernet weights, α/β/γ/δ, optimiser state,
    best-so-far, logs and genotype (single process; see test_search for two processes)."""
    steps = 12
    run = tmp_path / "killed"
    start = ["search", "--preset", "tiny-modnas", "--data", tiny_train_dir, "--run", run, "--steps", steps,
             "--threads", 1, "--no-progress"]
    resume = ["search", "--run", run, "--no-progress"]

    kill_at_random_step(Launch(start), run, 3, 6)
    first = checkpoint_step(run)
    assert first >= 2, f"[seed {SEED}]"

    tmp = kill_inside_checkpoint_write(Launch(resume, RESTORE_TEST_SLOW_CHECKPOINT="60"), run)
    assert tmp.exists() and checkpoint_step(run) == first

    assert Launch(resume).finish() == 0
    assert temp_files(run) == []

    cfg = make_config("tiny-modnas", train_dirs=[str(tiny_train_dir)], steps=steps, threads=1)
    search(cfg, tmp_path / "straight", show_progress=False)
    straight, resumed = (load_state(r / "checkpoint.safetensors") for r in (tmp_path / "straight", run))
    assert_same_tensors(straight["model"], resumed["model"], "supernet")
    assert straight["best"] == resumed["best"] and resumed["step"] == steps
    assert_same_tensors(*(load_file(str(r / "best_supernet.safetensors")) for r in (tmp_path / "straight", run)),
                        "best supernet")
    for name in ("genotype.json", "final_genotype.json"):
        assert (run / name).read_text() == (tmp_path / "straight" / name).read_text(), name
    # the logs hold each step once, however often it was replayed
    logged = [line.split(",")[0] for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert logged == [str(s) for s in range(1, steps + 1)]
