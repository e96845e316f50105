"""Training: improves validation PSNR, resumes exactly, and 2-process DDP equals 1 process."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from restore.config import config_from_dict
from restore.errors import RestoreError
from restore.train.config import TrainConfig
from restore.train.trainer import Trainer, train

REPO = Path(__file__).resolve().parents[1]


def tiny_config(genotype, data, **kw) -> TrainConfig:
    base = dict(model=str(genotype), train_dirs=(str(data),), degradation="awgn:25", patch=32, batch=4, steps=8,
                val_holdout=2, val_images=2, val_every=4, checkpoint_every=2, log_every=2, lr=3e-3, ema=0.9, threads=1)
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
    second = Trainer(cfg, tmp_path / "resumed", show_progress=False)
    assert second.resume() and second.step == 4
    second.fit()
    a = load_file(str(tmp_path / "straight" / "last.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "last.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _cli(*args, env=None):
    return [sys.executable, "-m", "restore", *args]


def test_sigkill_and_resume_via_cli(tiny_genotype, tiny_train_dir, tmp_path):
    """A real `restore train` process killed with SIGKILL resumes and ends like an uninterrupted run."""
    import json

    cfg = tiny_config(tiny_genotype, tiny_train_dir, steps=30, checkpoint_every=1, val_every=30)
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in cfg.__dict__.items()}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = tmp_path / "killed"
    proc = subprocess.Popen(_cli("train", "--config", str(cfg_path), "--run", str(run), "--no-progress"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoint.safetensors").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = subprocess.run(_cli("train", "--run", str(run), "--no-progress"), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resumed at step" in (run / "log.txt").read_text()
    train(cfg, tmp_path / "straight", show_progress=False)
    a = load_file(str(tmp_path / "straight" / "last.safetensors"))
    b = load_file(str(run / "last.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_two_process_ddp_matches_one_process(tiny_genotype, tiny_train_dir, tmp_path):
    import json

    cfg = tiny_config(tiny_genotype, tiny_train_dir, steps=4, val_every=4, ema=0.0)
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in cfg.__dict__.items()}))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "restore", "train", "-c", str(cfg_path), "-r", str(tmp_path / "ddp"), "--no-progress"]  # short flags: torchrun would take --run as its own --run-path
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    train(cfg, tmp_path / "single", show_progress=False)
    a = load_file(str(tmp_path / "single" / "last.safetensors"))
    b = load_file(str(tmp_path / "ddp" / "last.safetensors"))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


def test_bad_configs_are_clear(tiny_genotype, tiny_train_dir, tmp_path):
    with pytest.raises(RestoreError, match="unknown key"):
        config_from_dict(TrainConfig, {"modle": "x"})
    with pytest.raises(RestoreError, match="no images"):
        Trainer(tiny_config(tiny_genotype, tmp_path), tmp_path / "r", show_progress=False)
    with pytest.raises(RestoreError, match="larger than every image"):
        Trainer(tiny_config(tiny_genotype, tiny_train_dir, patch=512), tmp_path / "r2", show_progress=False)
    with pytest.raises(RestoreError, match="noise_map applies to AWGN"):
        tiny_config(tiny_genotype, tiny_train_dir, degradation="jpeg:20", noise_map=True)
