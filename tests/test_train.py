"""Training: improves validation PSNR, resumes exactly, and 2-process DDP equals 1 process."""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from restore.config import config_from_dict
from restore.errors import RestoreError
from restore.train.checkpoint import load_state, save_state
from restore.train.compact import expand_state
from restore.train.config import TrainConfig
from restore.train.run import (Dist, MetricLog, ProgressLog, RunDir, format_duration, init_distributed, init_process,
                               leaving_process_group, process_device)
from restore.train.trainer import Trainer, train

REPO = Path(__file__).resolve().parents[1]


def tiny_config(genotype, data, **kw) -> TrainConfig:
    base = dict(model=str(genotype), train_dirs=(str(data),), degradation="awgn:25", patch=32, batch=4, steps=8,
                val_holdout=2, val_images=2, val_every=4, checkpoint_every=2, log_every=2, lr=3e-3, ema=0.9, threads=1,
                device="cpu")  # the exactness tests hold on the CPU; GPU tests ask for "cuda"
    base.update(kw)
    return TrainConfig(**base)


def test_short_training_improves_validation_psnr(tiny_genotype, tiny_train_dir, tmp_path):
    cfg = tiny_config(tiny_genotype, tiny_train_dir, steps=40, val_every=40, ema=0.0)
    trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    before, _ = trainer.evaluate(trainer.model)
    summary = trainer.fit()
    assert summary["best_val_psnr"] > before + 0.5
    run = tmp_path / "run"
    for name in ("config.json", "genotype.json", "metrics.csv", "checkpoint.safetensors", "best.safetensors", "last.safetensors"):
        assert (run / name).is_file(), name


def resume_from_step_4_and_finish(cfg, tmp_path):
    """A new Trainer resumes tmp_path/resumed (checkpointed at step 4) and runs to the end: (straight, resumed) weights."""
    second = Trainer(cfg, tmp_path / "resumed", show_progress=False)
    assert second.resume() and second.step == 4
    second.fit()
    return (load_file(str(tmp_path / "straight" / "last.safetensors")),
            load_file(str(tmp_path / "resumed" / "last.safetensors")))


def test_resume_continues_exactly(tiny_genotype, tiny_train_dir, tmp_path):
    cfg = tiny_config(tiny_genotype, tiny_train_dir)
    train(cfg, tmp_path / "straight", show_progress=False)
    # interrupted: 5 steps, checkpoint at 4 → a new process would resume from step 4
    first = Trainer(cfg, tmp_path / "resumed", show_progress=False)
    first.run.save_config(cfg)
    for _ in range(5):
        first.train_step()
        if first.step % cfg.checkpoint_every == 0:
            first.save_checkpoint()
    a, b = resume_from_step_4_and_finish(cfg, tmp_path)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_refused_resume_leaves_the_run_as_it_was(tiny_genotype, tiny_train_dir, tmp_path):
    """Resuming a run with another model is refused before config.json or genotype.json change."""
    run = tmp_path / "run"
    train(tiny_config(tiny_genotype, tiny_train_dir, steps=2), run, show_progress=False)
    saved = {name: (run / name).read_bytes() for name in ("config.json", "genotype.json", "checkpoint.safetensors")}
    wider = Trainer(tiny_config(tiny_genotype, tiny_train_dir, steps=4, width=2.0), run, show_progress=False)
    with pytest.raises(RestoreError, match="belongs to a different model"):
        wider.fit()
    assert {name: (run / name).read_bytes() for name in saved} == saved
    again = Trainer(tiny_config(tiny_genotype, tiny_train_dir, steps=4), run, show_progress=False)
    assert again.resume() and again.step == 2  # the original run still resumes


def _cli(*args):
    return [sys.executable, "-m", "restore", *args]


def _write_config(cfg: TrainConfig, path: Path) -> Path:
    path.write_text(json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in cfg.__dict__.items()}))
    return path


def logged_steps(run: Path) -> list[int]:
    """The steps of metrics.csv, in order."""
    return [int(line.split(",")[0]) for line in (run / "metrics.csv").read_text().splitlines()[1:]]


def log_txt_steps(run: Path) -> list[int]:
    return [int(m) for m in re.findall(r"^\S+ \S+ step (\d+)/", (run / "log.txt").read_text(), flags=re.M)]


def test_sigkill_and_resume_via_cli(tiny_genotype, tiny_train_dir, tmp_path):
    """A real `restore train` process, SIGKILLed at a known point (step 12 done and logged,
    checkpoint of step 10 on disk), resumes, logs every step exactly once and ends like an
    uninterrupted run."""
    cfg = tiny_config(tiny_genotype, tiny_train_dir, steps=20, checkpoint_every=5, log_every=1, val_every=20)
    cfg_path = _write_config(cfg, tmp_path / "cfg.json")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run, marker, stderr = tmp_path / "killed", tmp_path / "paused", tmp_path / "stderr.txt"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(_cli("train", "--config", str(cfg_path), "--run", str(run), "--no-progress"),
                                env={**env, "RESTORE_TEST_PAUSE": "step/12", "RESTORE_TEST_PAUSED": str(marker)},
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.time() + 120
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert marker.exists() and marker.read_text() == "step/12", stderr.read_text()[-2000:]
        assert proc.poll() is None, "the run must still be alive when it is killed"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert load_state(run / "checkpoint.safetensors")["step"] == 10
    assert logged_steps(run) == list(range(1, 13))  # steps 11 and 12 are logged but not checkpointed

    done = subprocess.run(_cli("train", "--run", str(run), "--no-progress"), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resumed at step 10" in (run / "log.txt").read_text()
    assert logged_steps(run) == list(range(1, 21)), "each step exactly once in metrics.csv"
    assert log_txt_steps(run) == list(range(1, 21)), "each step exactly once in log.txt"
    train(cfg, tmp_path / "straight", show_progress=False)
    a = load_file(str(tmp_path / "straight" / "last.safetensors"))
    b = load_file(str(run / "last.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_truncate_logs_keeps_rows_up_to_the_checkpoint(tmp_path):
    """The one implementation behind both resumes: rows after the checkpoint step, a
    half-written last row and a damaged header go; messages stay; the rewrite is atomic."""
    run = RunDir(tmp_path)
    header = MetricLog(tmp_path / "metrics.csv", ["step", "loss"]).header
    metrics = tmp_path / "metrics.csv"
    with open(metrics, "a", newline="") as fh:
        fh.write("1,0.5\r\n2,0.4\r\n3,0.3\r\n4,0.2\r\n5,0.1")  # 5: a kill in the middle of an append
    metrics.chmod(0o640)
    (tmp_path / "log.txt").write_text(
        "2026-01-01 00:00:00 training x for 8 steps\n"
        "2026-01-01 00:00:01 step 2/8 (25.0%) loss=0.4 eta 3s\n"
        "2026-01-01 00:00:02 step 4/8 (50.0%) loss=0.2 eta 2s\n"
        "2026-01-01 00:00:03 skipped 1 unreadable image(s): x.png\n"
        "2026-01-01 00:00:03 step 6/8 (75.0%) loss=0.1 eta 1s\n"
        "2026-01-01 00:00:04 step 8/8 (1", encoding="utf-8")
    (tmp_path / "arch.jsonl").write_text('{"step": 3}\n{"step": 6}\n{"st', encoding="utf-8")

    assert run.truncate_logs(3, metrics_header=header, jsonl=["arch.jsonl"]) == 1
    assert metrics.read_bytes() == b"step,loss\r\n1,0.5\r\n2,0.4\r\n3,0.3\r\n"
    assert metrics.stat().st_mode & 0o777 == 0o640, "the rewrite keeps the file's permissions"
    assert (tmp_path / "log.txt").read_text(encoding="utf-8").splitlines() == [
        "2026-01-01 00:00:00 training x for 8 steps",
        "2026-01-01 00:00:01 step 2/8 (25.0%) loss=0.4 eta 3s",
        "2026-01-01 00:00:03 skipped 1 unreadable image(s): x.png",
    ]
    assert (tmp_path / "arch.jsonl").read_text(encoding="utf-8") == '{"step": 3}\n'
    assert not list(tmp_path.glob(".*.tmp"))

    inode = metrics.stat().st_ino
    assert run.truncate_logs(3, metrics_header=header) == 0
    assert metrics.stat().st_ino == inode, "nothing to drop: the file is left alone"

    metrics.write_text("ste")  # a kill while the header was being created
    run.truncate_logs(0, metrics_header=header)
    assert metrics.read_bytes() == header.encode()


@pytest.mark.parametrize("fails", [False, True])
def test_the_process_group_is_closed_on_the_way_out(tmp_path, fails):
    """A one-member gloo group stands in for a torchrun group: the group must be gone after
    a clean run (barrier included) and after an error (which still propagates)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        with pytest.raises(RuntimeError, match="boom") if fails else contextlib.nullcontext():
            with leaving_process_group(Dist(rank=0, world=2)):  # world>1: the distributed path
                if fails:
                    raise RuntimeError("boom")
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_two_process_ddp_matches_one_process(tiny_genotype, tiny_train_dir, tmp_path):
    cfg = tiny_config(tiny_genotype, tiny_train_dir, steps=4, val_every=4, ema=0.0)
    cfg_path = _write_config(cfg, tmp_path / "cfg.json")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    # --standalone: torchrun's rendezvous on a free port (no fixed port to collide with)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "restore", "train", "-c", str(cfg_path), "-r", str(tmp_path / "ddp"), "--no-progress"]  # short flags: torchrun would take --run as its own --run-path
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    # the ranks' own messages come first, torchrun's summary of the failure last
    assert done.returncode == 0, done.stderr[:3000] + "\n…\n" + done.stderr[-1000:]
    assert "2 process(es)" in (tmp_path / "ddp" / "log.txt").read_text(), "the 2-process group did not form"
    assert done.stdout.count("done:") == 1 and "-inf" not in done.stdout, done.stdout  # rank 0 alone reports
    train(cfg, tmp_path / "single", show_progress=False)
    assert "1 process(es)" in (tmp_path / "single" / "log.txt").read_text()
    a = load_file(str(tmp_path / "single" / "last.safetensors"))
    b = load_file(str(tmp_path / "ddp" / "last.safetensors"))
    # DDP sums the two halves' gradients in another order than one process does. Adam's
    # step is ≈ lr·sign(g) while its moments are young, so a weight whose gradient is ~0 can
    # step the other way in one run (seen once in a full suite): such weights may differ by
    # up to 2·lr per step; everything else must agree to float precision.
    close = torch.cat([torch.isclose(a[k], b[k], atol=1e-5).flatten() for k in a])
    assert close.float().mean() > 0.999, f"{int((~close).sum())} of {close.numel()} weights differ"
    for k in a:
        assert (a[k] - b[k]).abs().max() <= 2 * cfg.lr * cfg.steps, k


def test_unreadable_images_are_reported_and_progress_is_logged(tiny_genotype, tiny_train_dir, tmp_path, capsys):
    """Skipped images are named once at the start; without a terminal (nohup) every log line
    carries progress and an ETA, in log.txt and on stderr."""
    data = tmp_path / "data"
    shutil.copytree(tiny_train_dir, data)
    (data / "a_broken.png").write_bytes(b"not a png")  # sorts first: a training image
    png = sorted(tiny_train_dir.glob("*.png"))[0].read_bytes()
    (data / "zz_truncated.png").write_bytes(png[: len(png) // 3])  # sorts last: held out for validation
    cfg = tiny_config(tiny_genotype, data, steps=4, log_every=2, val_every=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # named once by the run's log, not warned per image
        trainer = Trainer(cfg, tmp_path / "run", show_progress=True)
    assert [p.name for p in trainer.data.unreadable] == ["a_broken.png"] and trainer.data.skipped == 1
    assert [p.name for p in trainer.val_unreadable] == ["zz_truncated.png"] and len(trainer.val) == 1
    trainer.fit()
    log = (tmp_path / "run" / "log.txt").read_text()
    assert log.count("skipped 2 unreadable image(s): a_broken.png, zz_truncated.png\n") == 1
    assert re.search(r" step 2/4 \(50\.0%\) time=\S+ lr=\S+ loss=\S+ eta \d+s\n", log)
    assert re.search(r" step 4/4 \(100\.0%\) .*val_psnr=\S+ .*eta 0s\n", log)
    err = capsys.readouterr().err  # not a terminal under pytest: plain lines instead of a bar
    assert "skipped 2 unreadable image(s): a_broken.png, zz_truncated.png" in err
    assert re.search(r"step 2/4 \(50\.0%\) .* eta \d+s", err)


def test_progress_line_carries_progress_and_eta(tmp_path):
    """The rate is this process's own (a resumed run does not count the steps before it)."""
    now = [500.0]
    with ProgressLog(RunDir(tmp_path), 20000, 1000, "train", show=False, clock=lambda: now[0]) as progress:
        assert progress.eta(1000) is None
        now[0] += 60.0  # 25 steps in a minute: 18975 left at 2.4 s each
        line = progress.log_step(1025, {"lr": 1e-3, "loss": 0.0021})
    assert line == "step 1025/20000 (5.1%) lr=0.001 loss=0.0021 eta 12h39m"
    assert (tmp_path / "log.txt").read_text().endswith(" " + line + "\n")


def test_format_duration():
    assert [format_duration(s) for s in (0, 45.4, 65, 3600 * 3 + 12 * 60 + 7, 86400 * 2 + 3 * 3600)] == [
        "0s", "45s", "1m05s", "3h12m", "2d03h"]


def test_noise_map_model_trains_and_loads_through_restore_load(tiny_genotype, tiny_train_dir, tmp_path):
    """End to end with the σ map: train over an AWGN σ range, load the run with
    `restore.load`, denoise at a given σ (and an estimated one)."""
    import numpy as np
    from PIL import Image

    import restore
    from restore.metrics import psnr

    run = tmp_path / "sigma"
    cfg = tiny_config(tiny_genotype, tiny_train_dir, noise_map=True, degradation="awgn:5-50", steps=120,
                      val_every=120, checkpoint_every=120, log_every=40, ema=0.0)
    summary = train(cfg, run, show_progress=False)
    assert summary["steps"] == 120 and "val_psnr" in (run / "metrics.csv").read_text().splitlines()[0]
    genotype = json.loads((run / "genotype.json").read_text())
    assert genotype["noise_map"] is True

    model = restore.load(run)
    assert model.entry.noise_map and model.task == "denoise"
    clean = np.asarray(Image.open(sorted(tiny_train_dir.glob("*.png"))[-1]).convert("L"), dtype=np.float32) / 255
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 30 / 255, clean.shape), 0, 1).astype(np.float32)
    out = model(noisy, sigma=30)
    assert out.shape == noisy.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert model.last.sigma == 30
    assert psnr(out, clean, data_range=1.0) > psnr(noisy, clean, data_range=1.0) + 1.0
    assert np.abs(model(noisy, sigma=5) - out).max() > 1e-3, "the σ map must reach the network"
    model(noisy)  # σ estimated from the image
    assert 15 < model.last.sigma < 45


def test_bad_configs_are_clear(tiny_genotype, tiny_train_dir, tmp_path):
    with pytest.raises(RestoreError, match="unknown key"):
        config_from_dict(TrainConfig, {"modle": "x"})
    with pytest.raises(RestoreError, match="no images"):
        Trainer(tiny_config(tiny_genotype, tmp_path), tmp_path / "r", show_progress=False)
    with pytest.raises(RestoreError, match="larger than every image"):
        Trainer(tiny_config(tiny_genotype, tiny_train_dir, patch=512), tmp_path / "r2", show_progress=False)
    with pytest.raises(RestoreError, match="noise_map applies to AWGN"):
        tiny_config(tiny_genotype, tiny_train_dir, degradation="jpeg:20", noise_map=True)
    for bad, text in (({"lr": -1.0}, "lr must be positive"), ({"lr": float("nan")}, "lr must be positive"),
                      ({"lr_min": -1e-5}, "lr_min must be >= 0"), ({"lr": 1e-4, "lr_min": 1e-3}, "must not exceed lr")):
        with pytest.raises(RestoreError, match=text):
            tiny_config(tiny_genotype, tiny_train_dir, **bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error of a machine without a CUDA GPU")
def test_training_on_a_missing_gpu_is_refused_before_anything_is_written(tiny_genotype, tiny_train_dir, tmp_path):
    for device, text in (("cuda", "no CUDA GPU is available"), ("tpu", "unknown device 'tpu'")):
        with pytest.raises(RestoreError, match=text):
            Trainer(tiny_config(tiny_genotype, tiny_train_dir, device=device), tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run").exists()
    auto = Trainer(tiny_config(tiny_genotype, tiny_train_dir, steps=2, device="auto"), tmp_path / "auto", show_progress=False)
    auto.fit()
    assert auto.device == torch.device("cpu") and "fp32 on cpu" in (tmp_path / "auto" / "log.txt").read_text()


def test_each_torchrun_process_takes_the_gpu_of_its_local_rank(monkeypatch):
    current = []
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert process_device("cuda", Dist(rank=3, world=4, local=1)) == torch.device("cuda", 1)
    assert process_device("cuda:0", Dist(rank=3, world=4, local=1)) == torch.device("cuda", 0)  # a named GPU wins
    assert process_device("cuda", Dist()) == torch.device("cuda")  # one process: torch's current GPU
    assert process_device("cpu", Dist(rank=1, world=2, local=1)) == torch.device("cpu")
    assert current == [torch.device("cuda", 1), torch.device("cuda", 0)]
    with pytest.raises(RestoreError, match="more processes on this machine than its 2 CUDA GPU"):
        process_device("cuda", Dist(rank=2, world=3, local=2))


def test_a_refused_gpu_start_leaves_no_process_group(monkeypatch, tmp_path):
    """Two processes on a one-GPU machine: the second is refused, and the group it joined is closed."""
    import torch.distributed as dist

    join = dist.init_process_group
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    # a real one-member gloo group stands in for the NCCL group of two
    monkeypatch.setattr(dist, "init_process_group",
                        lambda backend: join("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1))
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    try:
        with pytest.raises(RestoreError, match="more processes on this machine than its 1 CUDA GPU"):
            init_process("cuda")
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.parametrize("device, backend", [("cpu", "gloo"), ("cuda:0", "nccl")])
def test_the_process_group_backend_follows_the_training_device(monkeypatch, device, backend):
    """On a GPU machine a CPU run under torchrun still reduces over gloo: NCCL cannot reduce CPU tensors."""
    import torch.distributed as dist

    chosen = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend: chosen.append(backend))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    assert init_distributed(device) == Dist(rank=1, world=2, local=1)
    assert chosen == [backend]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_run_resumes_on_the_cpu(tiny_genotype, tiny_train_dir, tmp_path):
    """Checkpoints hold CPU tensors: a run started on a GPU continues on the CPU and ends
    where a CPU-only run ends, up to the sign flips Adam allows (see the DDP test)."""
    cfg = tiny_config(tiny_genotype, tiny_train_dir, device="cuda")
    on_gpu = Trainer(cfg, tmp_path / "run", show_progress=False)
    on_gpu.run.save_config(cfg)
    for _ in range(4):
        on_gpu.train_step()
    on_gpu.save_checkpoint()
    assert next(on_gpu.model.parameters()).is_cuda and next(on_gpu.ema.module.parameters()).is_cuda
    on_cpu = Trainer(replace(cfg, device="cpu"), tmp_path / "run", show_progress=False)
    on_cpu.fit()
    assert on_cpu.step == cfg.steps
    train(replace(cfg, device="cpu"), tmp_path / "straight", show_progress=False)
    a = load_file(str(tmp_path / "straight" / "last.safetensors"))
    b = load_file(str(tmp_path / "run" / "last.safetensors"))
    for k in a:
        assert (a[k] - b[k]).abs().max() <= 2 * cfg.lr * cfg.steps, k


def test_compact_checkpoint_is_smaller_and_resumes_close_to_an_uninterrupted_run(tiny_genotype, tiny_train_dir, tmp_path):
    """bf16 moments + a bf16 EMA delta (restore.train.compact): ≤ 65 % of the bytes, same step, near-same end."""
    cfg = tiny_config(tiny_genotype, tiny_train_dir, compact_checkpoint=True)
    train(cfg, tmp_path / "straight", show_progress=False)
    first = Trainer(cfg, tmp_path / "resumed", show_progress=False)
    first.run.save_config(cfg)
    for _ in range(4):
        first.train_step()
    first.save_checkpoint()
    save_state(tmp_path / "full.safetensors", first.state())
    def network_bytes(path):  # a tiny net's JSON header and 5 kB RNG state would blur a real net's ratio
        return sum(t.nbytes for k, t in load_file(str(path)).items() if not k.startswith(".rng"))

    # four float32 copies (weights, EMA, two moments) → one float32 + three bf16: 10/16
    assert network_bytes(first.run.checkpoint) <= 0.63 * network_bytes(tmp_path / "full.safetensors")

    full, compact = load_state(tmp_path / "full.safetensors"), expand_state(load_state(first.run.checkpoint))
    for k, v in full["model"].items():
        assert torch.equal(v, compact["model"][k]), k  # training continues from float32 weights
        lag = (full["ema"][k] - v).abs().max()
        assert (compact["ema"][k] - full["ema"][k]).abs().max() <= lag / 128 + 1e-12, k  # the delta is what rounds
    for index, slot in full["optimizer"]["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            got = compact["optimizer"]["state"][index][key]
            assert got.dtype == torch.float32 and torch.allclose(got, slot[key], rtol=2 ** -8, atol=0), (index, key)

    a, b = resume_from_step_4_and_finish(cfg, tmp_path)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4), (k, (a[k] - b[k]).abs().max())
