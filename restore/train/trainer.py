"""Train a derived network: Adam + cosine schedule, EMA, validation, exact resume, DDP.

Determinism is by construction: the global batch of step s is drawn from generators
seeded by (seed, s, item), so a resumed run (or a run on N processes, each taking its
slice of the global batch) sees exactly the data an uninterrupted single-process run sees.
The learning rate is a pure function of the step, and the checkpoint holds the model,
optimizer, EMA and RNG state, so `restore train` continues bit-for-bit where it stopped
(on a GPU up to the last bits that cuDNN's choice of kernels may change; within bf16
rounding with ``compact_checkpoint``, see `restore.train.compact`). Checkpoints hold CPU
tensors, so a run may also continue on another device (`--device`). The
metrics.csv / log.txt rows a killed run wrote after its last checkpoint are dropped on
resume, so every step is logged once.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from restore.data import EvalSet, PatchDataset, list_images
from restore.data.datasets import exclude_rain_backgrounds, readable_images, skipped_report
from restore.errors import RestoreError
from restore.metrics import mse_log_ssim_loss, psnr, ssim
from restore.models.build import build, resolve_genotype
from restore.models.genotype import save_genotype
from restore.models.grow import load_grown
from restore.runtime.noise import append_noise_map
from restore.runtime.precision import autocast, resolve_precision
from restore.runtime.tiling import TileConfig, restore_tensor
from restore import faults
from restore.train.checkpoint import load_state, rng_state, save_state, save_tensors, set_rng_state
from restore.train.compact import compact_state, expand_state
from restore.train.config import TrainConfig
from restore.train.ema import EMA
from restore.train.run import (NO_DATA, MetricLog, ProgressLog, RunDir, cosine_lr, init_process, leaving_process_group, set_lr,
                               stack_batch)
from restore.zoo.registry import apply_weights, read_weights

METRICS = ["step", "time", "lr", "loss", "val_psnr", "val_ssim"]


def default_val_spec(spec: str) -> str:
    """A fixed validation setting for a (possibly ranged) training degradation."""
    kind, _, arg = spec.partition(":")
    if "-" in arg:
        lo, hi = (float(v) for v in arg.split("-"))
        fixed = {"awgn": 25.0, "jpeg": 20.0}.get(kind, (lo + hi) / 2)
        fixed = min(max(fixed, lo), hi)
        return f"{kind}:{fixed:g}"
    return spec


def loss_fn(name: str, weight: float):
    if name == "mse":
        return nn.functional.mse_loss
    return lambda pred, target: mse_log_ssim_loss(pred, target, lam=weight)


@dataclass
class Split:
    train: list[Path]
    val: list[Path]  # validation images (the first `val_images` readable ones are scored)


def split_images(cfg: TrainConfig) -> Split:
    if not cfg.train_dirs:
        raise RestoreError(NO_DATA)
    paths = [p for d in cfg.train_dirs for p in list_images(d)]
    if cfg.exclude_rain_backgrounds:
        paths = exclude_rain_backgrounds(paths)
    if cfg.val_dir is not None:
        return Split(paths, list_images(cfg.val_dir))
    # hold out the last images of the first folder: a deterministic, disjoint validation set
    first = [p for p in paths if p.parent == Path(cfg.train_dirs[0])]
    if len(first) <= cfg.val_holdout:
        raise RestoreError(f"{cfg.train_dirs[0]} has too few images to hold out {cfg.val_holdout} for validation")
    held = first[-cfg.val_holdout :]
    held_set = set(held)
    return Split([p for p in paths if p not in held_set], held)


class Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: str | Path, *, show_progress: bool = True):
        self.cfg = cfg
        self.dist, self.device = init_process(cfg.device)  # first: a missing GPU fails before anything is written
        self.run = RunDir(run_dir, main=self.dist.main)
        self.show_progress = show_progress and self.dist.main
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.genotype = resolve_genotype(cfg.model, in_channels=cfg.channels, noise_map=cfg.noise_map, stages=cfg.stages,
                                          width=cfg.width)
        self.model = build(self.genotype)
        if cfg.init_from:
            self._warm_start(Path(cfg.init_from))
        # before the optimizer and the EMA copy are made, so their state lives on the device too
        self.model = self.model.to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        on_gpu = self.device.type == "cuda"
        self.net = DistributedDataParallel(self.model, device_ids=[self.device] if on_gpu else None) if self.dist.world > 1 else self.model
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.ema = EMA(self.model, cfg.ema) if cfg.ema > 0 else None
        self.loss = loss_fn(cfg.loss, cfg.ssim_weight)
        self.precision = resolve_precision(cfg.precision, self.device.type)  # the forward pass only; weights, Adam and validation stay fp32
        split = split_images(cfg)
        self.data = PatchDataset(
            split.train, patch=cfg.patch, channels=cfg.channels, degradation=cfg.degradation,
            length=cfg.batch, noise_map=cfg.noise_map, seed=cfg.seed, warn=False,  # fit() logs the skipped ones
        )
        val_spec = cfg.val_degradation or default_val_spec(cfg.degradation)
        self.val_sigma = float(val_spec.split(":")[1]) if cfg.noise_map else None
        val_paths, self.val_unreadable = readable_images(split.val, limit=cfg.val_images, warn=False)
        if not val_paths:
            raise RestoreError(f"no readable validation images among {len(split.val)} in {split.val[0].parent}")
        self.val = EvalSet(val_paths, val_spec, cfg.channels)
        self.step = 0
        self.best_psnr = -math.inf
        self.log = MetricLog(self.run.path / "metrics.csv", METRICS) if self.dist.main else None

    # ------------------------------------------------------------------ state
    def _warm_start(self, path: Path) -> None:
        if not path.is_file():
            raise RestoreError(f"init_from: {path} not found")
        state = read_weights(path)
        if self.cfg.grow:
            load_grown(self.model, state)
        else:
            apply_weights(self.model, state, path)

    def state(self) -> dict:
        return {
            "step": self.step,
            "best_psnr": self.best_psnr if math.isfinite(self.best_psnr) else None,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "rng": rng_state(),
            "config": asdict(self.cfg),
        }

    def skipped_report(self) -> list[str]:
        """Lines about the training and validation images that could not be used."""
        return skipped_report(self.data.unreadable + self.val_unreadable, self.data.too_small, self.cfg.patch)

    def resume(self) -> bool:
        """Load the run's checkpoint, if any, and drop the log rows written after it."""
        if not self.run.checkpoint.exists():
            self._recover()  # a kill before the first checkpoint: the logs start afresh
            return False
        state = expand_state(load_state(self.run.checkpoint))
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError:
            raise RestoreError(f"the checkpoint in {self.run.path} belongs to a different model; use a new --run folder") from None
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.best_psnr = -math.inf if state["best_psnr"] is None else float(state["best_psnr"])
        self._recover()
        self.run.log(f"resumed at step {self.step}")
        return True

    def _recover(self) -> None:
        header = self.log.header if self.log else None
        self.run.recover(self.step, metrics_header=header)

    def save_checkpoint(self) -> None:
        if self.dist.main:
            state = self.state()
            save_state(self.run.checkpoint, compact_state(state) if self.cfg.compact_checkpoint else state)

    # ------------------------------------------------------------------ steps
    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.data.set_epoch(step)
        x, y = stack_batch([self.data[i] for i in self.dist.shard(self.cfg.batch)], self.device)
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def train_step(self) -> float:
        lr = cosine_lr(self.step, self.cfg.steps, self.cfg.lr, self.cfg.lr_min)
        set_lr(self.optimizer, lr)
        x, y = self.batch(self.step)
        self.net.train()
        with autocast(self.precision, self.device.type):
            pred = self.net(x)
        loss = self.loss(pred.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        if self.ema:
            self.ema.update(self.model, self.step)
        self.step += 1
        return float(loss.detach())

    def evaluate(self, model: nn.Module | None = None) -> tuple[float, float]:
        """Mean PSNR/SSIM on the validation images (whole-image inference)."""
        model = model or (self.ema.module if self.ema else self.model)
        model.eval()
        size_multiple = getattr(model, "size_multiple", 1)
        scores = []
        for k in range(min(self.cfg.val_images, len(self.val))):
            _, degraded, clean = self.val[k]
            x = torch.from_numpy(degraded.transpose(2, 0, 1)).unsqueeze(0)
            if self.val_sigma is not None:
                x = append_noise_map(x, self.val_sigma)
            out = restore_tensor(model, x, config=TileConfig(tile=None), size_multiple=size_multiple,
                                 out_channels=self.cfg.channels, device=self.device)
            pred = out[0].clamp(0, 1).numpy().transpose(1, 2, 0)
            scores.append((psnr(pred, clean, data_range=1.0), ssim(pred, clean, data_range=1.0)))
        return float(np.mean([s[0] for s in scores])), float(np.mean([s[1] for s in scores]))

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict:
        cfg = self.cfg
        self.resume()  # first: a refused resume (another model's checkpoint) must leave the run as it was
        self.run.save_config(cfg)
        if self.dist.main:
            save_genotype(self.genotype, self.run.path / "genotype.json")
        losses: list[float] = []
        t0 = time.time()
        with ProgressLog(self.run, cfg.steps, self.step, "train", self.show_progress) as progress:
            progress.note(f"training {self.genotype.space} '{cfg.model}' for {cfg.steps} steps on "
                          f"{len(self.data.paths)} images, {self.dist.world} process(es), {self.precision} on {self.device}")
            for line in self.skipped_report():
                progress.note(line)
            while self.step < cfg.steps:
                losses.append(self.train_step())
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    mean_loss = float(np.mean(losses))
                    losses.clear()
                    fields = {"time": round(time.time() - t0, 1), "lr": self.optimizer.param_groups[0]["lr"], "loss": mean_loss}
                    if self.step % cfg.val_every == 0 or self.step == cfg.steps:
                        fields.update(self._validate())
                    if self.log:
                        self.log.write(step=self.step, **fields)
                    progress.log_step(self.step, fields, loss=mean_loss, **{k: v for k, v in fields.items() if k.startswith("val")})
                faults.pause(f"step/{self.step}")
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.save_checkpoint()
        return self.finish()

    def _validate(self) -> dict:
        if not self.dist.main:
            return {}
        val_psnr, val_ssim = self.evaluate()
        if val_psnr > self.best_psnr:
            self.best_psnr = val_psnr
            self.export_weights(self.run.path / "best.safetensors")
        return {"val_psnr": val_psnr, "val_ssim": val_ssim}

    def export_weights(self, path: Path) -> None:
        """The (EMA) weights in the plain safetensors form that `restore.load` reads."""
        source = self.ema.module if self.ema else self.model
        save_tensors(path, source.state_dict())

    def finish(self) -> dict:
        summary = {"steps": self.step, "best_val_psnr": self.best_psnr}
        if self.dist.main:
            self.export_weights(self.run.path / "last.safetensors")
            self.run.log(f"done: {summary}")
        return summary


def train(cfg: TrainConfig, run_dir: str | Path, *, show_progress: bool = True) -> dict:
    trainer = Trainer(cfg, run_dir, show_progress=show_progress)
    with leaving_process_group(trainer.dist):
        return trainer.fit()
