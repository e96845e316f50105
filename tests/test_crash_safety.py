"""Crash-safe long runs (issue #8, item 4): `restore train` and `restore search` are killed
with SIGKILL at several points — between checkpoints, inside the architecture update,
while a checkpoint's bytes are being written, after the temp file is complete but before
the rename, and while a genotype file or a log is being rewritten — resumed each time,
and end exactly where an uninterrupted run with the same seed ends.

Each killed run is a real process running the CLI (`restore.cli.app` with the same
arguments a user types), forked from the test process so the ~5 s torch import is paid
once; SIGKILL gives it no chance to clean up. The kill points are exact, not timed: the
RESTORE_TEST_PAUSE hook (restore/faults.py) stops the run at a named point and
reports its arrival through a marker file, and only then is it killed.

The random steps come from a fixed seed, printed with the kill plan (pytest -s shows it,
and every failure message carries it); RESTORE_CRASH_SEED=<n> replays another plan.
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
from restore import faults
from restore.train.checkpoint import load_state, save_state
from restore.train.config import TrainConfig
from restore.atomic import atomic_write
from restore.train.trainer import train

SEED = int(os.environ.get("RESTORE_CRASH_SEED", "8"))
TIMEOUT = 120  # seconds any one launch may take before the test gives up


def plan_rng(test: str) -> random.Random:
    """The kill plan's generator: depends only on SEED and the test (not on test order)."""
    return random.Random(f"{SEED}:{test}")


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
    """A forked process running `restore ARGS`, optionally told to stop at a fault point."""

    def __init__(self, args: list, *, pause: str | None = None, marker: Path | None = None):
        self.args = [str(a) for a in args]
        self.pause, self.marker = pause, marker
        env = {}
        if pause:
            marker.unlink(missing_ok=True)
            env = {faults.PAUSE_ENV: pause, faults.PAUSED_ENV: str(marker)}
        self.proc = multiprocessing.get_context("fork").Process(target=_cli_child, args=(self.args, env))
        self.proc.start()

    def alive(self) -> bool:
        return self.proc.exitcode is None

    def kill_at_pause(self) -> None:
        """Wait until the run has stopped at its fault point, check it is alive, SIGKILL it."""
        deadline = time.time() + TIMEOUT
        while not (self.marker.exists() and self.marker.read_text() == self.pause):
            if not self.alive():
                pytest.fail(f"the run ended (exit {self.proc.exitcode}) before reaching {self.pause} [seed {SEED}]")
            if time.time() > deadline:
                self.proc.kill()
                pytest.fail(f"timed out waiting for {self.pause} [seed {SEED}]")
            time.sleep(0.01)
        assert self.alive(), f"the run must be alive when killed at {self.pause} [seed {SEED}]"
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join(10)
        assert self.proc.exitcode == -signal.SIGKILL, f"{self.pause}: exit {self.proc.exitcode} [seed {SEED}]"

    def finish(self) -> int:
        self.proc.join(TIMEOUT)
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.join(10)
            pytest.fail(f"`restore {' '.join(self.args)}` did not finish in {TIMEOUT} s [seed {SEED}]")
        return self.proc.exitcode


def temp_files(run: Path, name: str = "checkpoint.safetensors") -> list[Path]:
    return sorted(run.glob(f".{name}.*.tmp"))


def checkpoint_step(run: Path) -> int:
    return int(load_state(run / "checkpoint.safetensors")["step"])


def csv_rows(run: Path) -> list[list[str]]:
    """metrics.csv without the wall-clock column (everything else is deterministic)."""
    lines = (run / "metrics.csv").read_text().splitlines()
    time_col = lines[0].split(",").index("time")
    return [[v for i, v in enumerate(line.split(",")) if i != time_col] for line in lines]


def logged_steps(run: Path) -> list[int]:
    return [int(row[0]) for row in csv_rows(run)[1:]]


def text_log_steps(run: Path) -> list[int]:
    import re

    return [int(m) for m in re.findall(r"^\S+ \S+ step (\d+)/", (run / "log.txt").read_text(), flags=re.M)]


def assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}: {k} differs [seed {SEED}]"


def assert_same_optimizer(a: dict, b: dict, what: str) -> None:
    assert a["param_groups"] == b["param_groups"], what
    assert a["state"].keys() == b["state"].keys(), what
    for k in a["state"]:
        assert_same_tensors({n: torch.as_tensor(v) for n, v in a["state"][k].items()},
                            {n: torch.as_tensor(v) for n, v in b["state"][k].items()}, f"{what} state {k}")


# --------------------------------------------------------------------------- atomic files


def test_a_stale_temp_file_is_ignored_and_cleaned(tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    save_state(path, {"step": 1, "w": torch.ones(3)})
    stray = tmp_path / ".checkpoint.safetensors.abc123.tmp"
    stray.write_bytes(b"half a checkpoint")  # what a kill during a save leaves
    assert load_state(path)["step"] == 1
    save_state(path, {"step": 2, "w": torch.zeros(3)})
    assert not stray.exists() and load_state(path)["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.safetensors"]


def _write_and_pause(path: Path, data: bytes, point: str, marker: Path) -> None:
    os.environ.update({faults.PAUSE_ENV: point, faults.PAUSED_ENV: str(marker)})
    atomic_write(path, data)


@pytest.mark.parametrize("where", ["write-mid", "write-end"])
def test_a_kill_during_an_atomic_write_keeps_the_old_file(tmp_path, where):
    """SIGKILL with half of the new bytes written (or all of them, before the rename): the
    old file is intact, the partial temp file is never read, the next write cleans it."""
    path, marker = tmp_path / "genotype.json", tmp_path / "paused"
    atomic_write(path, b"old")
    path.chmod(0o640)
    new = bytes(range(256)) * 64
    # a daemon, and killed in `finally`: a failed assertion must not leave a child that
    # sleeps for an hour and keeps pytest from exiting
    proc = multiprocessing.get_context("fork").Process(
        target=_write_and_pause, args=(path, new, f"{where}/{path.name}", marker), daemon=True)
    proc.start()
    try:
        deadline = time.time() + TIMEOUT
        while not marker.exists() and proc.exitcode is None and time.time() < deadline:
            time.sleep(0.01)
        assert marker.read_text() == f"{where}/{path.name}" and proc.exitcode is None
    finally:
        if proc.exitcode is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
    assert path.read_bytes() == b"old"
    (tmp,) = temp_files(tmp_path, path.name)
    assert tmp.read_bytes() == (new[: len(new) // 2] if where == "write-mid" else new)
    atomic_write(path, b"newer")
    assert path.read_bytes() == b"newer" and temp_files(tmp_path, path.name) == []
    assert path.stat().st_mode & 0o777 == 0o640


# --------------------------------------------------------------------------- training


def test_training_killed_four_times_ends_bit_exact(tiny_genotype, tiny_train_dir, tmp_path):
    cfg = TrainConfig(model=str(tiny_genotype), train_dirs=(str(tiny_train_dir),), degradation="awgn:25", patch=32,
                      batch=4, steps=40, val_holdout=2, val_images=2, val_every=10, checkpoint_every=3, log_every=1,
                      lr=3e-3, ema=0.9, threads=1, device="cpu")  # bit-exact is a CPU promise
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in cfg.__dict__.items()}))
    run, marker = tmp_path / "killed", tmp_path / "paused"
    resume = ["train", "--run", run, "--no-progress"]
    rng = plan_rng("train")
    k1 = rng.randint(4, 12)
    c1 = (k1 - 1) // 3 * 3  # the step-k1 checkpoint (if due) is not written yet at "step/k1"
    k2 = rng.randint(c1 + 7, 30)
    print(f"[seed {SEED}] train kill plan: step {k1}, metrics.csv rewrite, checkpoint mid-write, step {k2}")

    # 1. between checkpoints: the last checkpoint is kept, the steps after it were logged
    Launch(["train", "--config", cfg_path, *resume[1:]], pause=f"step/{k1}", marker=marker).kill_at_pause()
    assert checkpoint_step(run) == c1 and logged_steps(run) == list(range(1, k1 + 1)), f"[seed {SEED}]"

    # 2. while the resumed run rewrites metrics.csv without those steps: the old file stays whole
    before = (run / "metrics.csv").read_bytes()
    Launch(resume, pause="write-mid/metrics.csv", marker=marker).kill_at_pause()
    assert (run / "metrics.csv").read_bytes() == before and len(temp_files(run, "metrics.csv")) == 1

    # 3. while the bytes of the next checkpoint are being written: the old checkpoint still loads
    Launch(resume, pause="write-mid/checkpoint.safetensors", marker=marker).kill_at_pause()
    (tmp,) = temp_files(run)
    assert 0 < tmp.stat().st_size < (run / "checkpoint.safetensors").stat().st_size
    assert checkpoint_step(run) == c1, f"[seed {SEED}]"

    # 4. between checkpoints again, after the resumed run has checkpointed past the first kill
    Launch(resume, pause=f"step/{k2}", marker=marker).kill_at_pause()
    assert checkpoint_step(run) == (k2 - 1) // 3 * 3 > c1, f"[seed {SEED}]"

    # resume to the end
    assert Launch(resume).finish() == 0
    assert list(run.glob(".*.tmp")) == [], "the resume removes the temp files of killed writes"
    assert (run / "log.txt").read_text().count("resumed at step") == 3  # kill 2 came before that line

    straight = tmp_path / "straight"
    train(cfg, straight, show_progress=False)
    for name in ("last.safetensors", "best.safetensors"):
        assert_same_tensors(load_file(str(straight / name)), load_file(str(run / name)), name)
    a, b = (load_state(r / "checkpoint.safetensors") for r in (straight, run))
    assert_same_tensors(a["model"], b["model"], "model")
    assert_same_tensors(a["ema"], b["ema"], "EMA")
    assert_same_optimizer(a["optimizer"], b["optimizer"], "Adam")
    assert a["step"] == b["step"] == 40 and a["best_psnr"] == b["best_psnr"]
    # every step logged once, with the values of the uninterrupted run
    assert csv_rows(run) == csv_rows(straight), f"[seed {SEED}]"
    assert text_log_steps(run) == list(range(1, 41))


# --------------------------------------------------------------------------- search


def test_search_killed_six_times_ends_like_an_uninterrupted_search(tiny_train_dir, tmp_path):
    """`restore search --preset tiny-modnas` (12 steps, checkpoint every 2, arch updates from
    step 7, evaluations at 3/6/9/12, a best genotype first written at step 9), killed at
    six points; the resumed search has bit-identical supernet weights, α/β/γ/δ, optimiser
    state, best-so-far, genotypes and logs (single process; see test_search for two)."""
    steps = 12
    run, marker = tmp_path / "killed", tmp_path / "paused"
    start = ["search", "--preset", "tiny-modnas", "--data", tiny_train_dir, "--run", run, "--steps", steps,
             "--threads", 1, "--no-progress"]
    resume = ["search", "--run", run, "--no-progress"]
    rng = plan_rng("search")
    k1 = rng.randint(3, 5)
    c1 = (k1 - 1) // 2 * 2
    k3 = rng.randint(7, 8)
    print(f"[seed {SEED}] search kill plan: step {k1}, metrics.csv rewrite, checkpoint before rename, "
          f"architecture update of step {k3}, best_genotype.json mid-write, checkpoint mid-write")

    # 1. between checkpoints
    Launch(start, pause=f"step/{k1}", marker=marker).kill_at_pause()
    assert checkpoint_step(run) == c1 and logged_steps(run) == list(range(1, k1 + 1)), f"[seed {SEED}]"

    # 2. during the log rewrite of the resume
    before = (run / "metrics.csv").read_bytes()
    Launch(resume, pause="write-mid/metrics.csv", marker=marker).kill_at_pause()
    assert (run / "metrics.csv").read_bytes() == before

    # 3. the checkpoint's temp file is complete, the rename has not happened
    Launch(resume, pause="write-end/checkpoint.safetensors", marker=marker).kill_at_pause()
    (tmp,) = temp_files(run)
    assert checkpoint_step(run) == c1 and load_state(tmp)["step"] == c1 + 2, f"[seed {SEED}]"

    # 4. inside the architecture update (gradient computed, not applied)
    Launch(resume, pause=f"arch/{k3}", marker=marker).kill_at_pause()
    assert checkpoint_step(run) == (k3 - 1) // 2 * 2 and logged_steps(run)[-1] == k3 - 1, f"[seed {SEED}]"

    # 5. while best_genotype.json is first written (step 9): no half file appears
    Launch(resume, pause="write-mid/best_genotype.json", marker=marker).kill_at_pause()
    assert not (run / "best_genotype.json").exists() and len(temp_files(run, "best_genotype.json")) == 1
    assert checkpoint_step(run) == 8

    # 6. while the bytes of the next checkpoint (step 10) are being written
    Launch(resume, pause="write-mid/checkpoint.safetensors", marker=marker).kill_at_pause()
    assert checkpoint_step(run) == 8 and len(temp_files(run)) == 1

    assert Launch(resume).finish() == 0
    assert list(run.glob(".*.tmp")) == []
    assert (run / "log.txt").read_text().count("resumed at step") == 5  # kill 2 came before that line

    straight = tmp_path / "straight"
    search(make_config("tiny-modnas", train_dirs=[str(tiny_train_dir)], steps=steps, threads=1), straight,
           show_progress=False)
    a, b = (load_state(r / "checkpoint.safetensors") for r in (straight, run))
    assert_same_tensors(a["model"], b["model"], "supernet")
    assert_same_optimizer(a["opt_w"], b["opt_w"], "weight optimiser")
    assert_same_optimizer(a["opt_a"], b["opt_a"], "architecture optimiser")
    assert a["best"] == b["best"] and b["step"] == steps
    assert_same_tensors(*(load_file(str(r / "best_supernet.safetensors")) for r in (straight, run)), "best supernet")
    for name in ("genotype.json", "final_genotype.json", "best_genotype.json", "arch_log.jsonl"):
        assert (run / name).read_text() == (straight / name).read_text(), f"{name} [seed {SEED}]"
    # the logs hold each step once, however often it was replayed, with the uninterrupted values
    assert csv_rows(run) == csv_rows(straight), f"[seed {SEED}]"
    assert logged_steps(run) == list(range(1, steps + 1))
    assert text_log_steps(run) == list(range(1, steps + 1))
