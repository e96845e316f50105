"""Bilevel differentiable architecture search for both spaces (first-order DARTS).

Data: the clean images are split into disjoint Train W / Train A / Train V
(`split_train_arch_val`: V holds `val_fraction` of them, the rest is halved). IR-NAS uses
exactly this split; MoD-NAS only halves its data into W and A, and we hold out the same
small V for it too, so that "keep the supernet with the best validation PSNR" works the
same way in both spaces.

Each step s (0-based): one weight update on a Train W batch, then — once
s ≥ warmup_steps — one architecture update on a Train A batch (Algorithm 1's order).
The architecture gradient is first-order: ∇_A L_A(W, A) at the current weights, with no
unrolled second-order step through a virtual weight update. During the weight update the
architecture parameters are frozen (and vice versa), so neither optimiser ever sees the
other group's gradients and the arch backward skips the weight-gradient convolutions.

Determinism (as in the trainer): the batch of step s is drawn from generators seeded by
(seed, s, item), learning rates are pure functions of s, and the checkpoint holds both
optimisers, the RNG state and the best-so-far, so a killed search resumes bit-for-bit
(the log rows written after the last checkpoint are dropped on resume, so every step is
logged once).
Under torchrun each process takes its shard of the global batch and the gradients of
both updates are averaged with one all_reduce, which matches one process up to float
noise for per-sample losses (MSE). Two exceptions: log-SSIM is the log of the batch-mean
SSIM, and HiNAS BatchNorm normalises over each process's shard, so those differ slightly
from a single-process run (as under DDP without SyncBatchNorm).

Outputs in the run directory: config.json, log.txt, metrics.csv, arch_log.jsonl (α/β/γ/δ
and the derived genotype at every evaluation), best_genotype.json + best_supernet.safetensors
(updated whenever Train V PSNR improves after the warm-up), genotype.json (the best) and
final_genotype.json (derived at the end), and checkpoint.safetensors (resumable).
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from restore.data import EvalSet, PatchDataset, list_images, split_train_arch_val
from restore.data.datasets import exclude_rain_backgrounds, readable_images, skipped_report
from restore.errors import RestoreError
from restore.metrics import psnr, ssim
from restore.models.genotype import Genotype, HiNASGenotype, save_genotype, to_dict
from restore.models.hinas import HiNASSupernet
from restore.models.modnas import ModNASSupernet, SearchSpaceConfig, derive_width, layer_keys
from restore.runtime.noise import append_noise_map
from restore.runtime.tiling import TileConfig, restore_tensor
from restore.search.config import SearchConfig, structural_changes
from restore import faults
from restore.train.checkpoint import load_state, rng_state, save_state, save_tensors, set_rng_state
from restore.train.run import (NO_DATA, MetricLog, ProgressLog, RunDir, cosine_lr, init_process, leaving_process_group, set_lr,
                               stack_batch)
from restore.train.trainer import default_val_spec, loss_fn

ARCH_LOG = "arch_log.jsonl"
METRICS = ["step", "time", "lr", "arch_lr", "loss", "arch_loss", "val_psnr", "val_ssim"]


# =========================================================================== data


@dataclass
class Splits:
    train_w: list[Path]
    train_a: list[Path]
    val: list[Path]


def split_images(cfg: SearchConfig) -> Splits:
    """Disjoint Train W / Train A / Train V from every image of the training folders."""
    if not cfg.train_dirs:
        raise RestoreError(NO_DATA)
    paths = [p for d in cfg.train_dirs for p in list_images(d)]
    if cfg.exclude_rain_backgrounds:
        paths = exclude_rain_backgrounds(paths)
    return Splits(*split_train_arch_val(paths, val_fraction=cfg.val_fraction, seed=cfg.seed))


def load_val_images(paths: list[Path], spec: str, channels: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, degraded, clean) of the Train V images, degraded deterministically (EvalSet)."""
    return sorted(EvalSet(paths, spec, channels), key=lambda item: item[0])


# =========================================================================== supernet


def build_supernet(cfg: SearchConfig) -> nn.Module:
    if cfg.space == "modnas":
        space = SearchSpaceConfig(
            in_channels=cfg.channels, out_channels=cfg.channels, noise_map=cfg.noise_map,
            channels=cfg.modnas_channels, levels=cfg.levels, layers_per_block=cfg.layers_per_block,
            stages=cfg.stages, unfold=cfg.unfold, depth=cfg.depth,
        )
        return ModNASSupernet(space)
    return HiNASSupernet(
        cfg.channels, cfg.channels, noise_map=cfg.noise_map, layers=cfg.layers, nodes=cfg.nodes,
        base_width=cfg.base_width, stem_channels=cfg.stem_channels,
    )


def derive_genotype(model: nn.Module, name: str = "") -> Genotype:
    """The discrete architecture of the supernet's current α/β/γ (MoD-NAS keeps the searched T)."""
    if isinstance(model, ModNASSupernet):
        return model.genotype(stages=model.cfg.stages, name=name)
    return model.genotype(name=name)


def _rounded(t: torch.Tensor) -> list:
    return np.round(t.detach().cpu().double().numpy(), 5).tolist()


def arch_snapshot(model: nn.Module) -> dict:
    """Human-readable architecture parameters: softmaxed α, derived widths, γ, δ (MoD-NAS);
    softmaxed α and β transition matrices (HiNAS)."""
    with torch.no_grad():
        if isinstance(model, HiNASSupernet):
            return {"ops": list(model.primitives), "alpha": _rounded(model.alphas()),
                    "beta": [_rounded(t) for t in model.betas()]}
        cfg = model.cfg
        snap: dict = {"ops": {"normal": list(cfg.normal_ops), "down": list(cfg.down_ops), "up": list(cfg.up_ops)},
                      "alpha": {}, "widths": {}, "gamma": {}}
        for key, _ in layer_keys(cfg.levels, cfg.layers_per_block):
            weights, betas = model.op_weights(key)
            snap["alpha"][key] = _rounded(weights)
            snap["widths"][key] = [derive_width(b) for b in betas]  # per candidate op (Eq. 10)
        for k, g in model.gamma.items():
            snap["gamma"][k.replace("_l", ".l")] = _rounded(F.softmax(g, dim=0))  # over sources 0..i+1
        deltas = model.deltas()
        snap["delta"] = None if deltas is None else _rounded(deltas)
        return snap


def _count_ops(ops) -> str:
    counts: dict[str, int] = {}
    for op in ops:
        counts[op] = counts.get(op, 0) + 1
    return ", ".join(f"{n}×{op}" for op, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def describe(g: Genotype, params: int) -> str:
    """One line about a derived architecture."""
    if isinstance(g, HiNASGenotype):
        ops = _count_ops(op for node in g.cell for op in node.ops)
        widths = "-".join(str(g.base_width * 2**w) for w in g.widths)
        return f"HiNAS: {len(g.widths)} cells × {g.nodes} nodes ({ops}), node widths {widths}, {params / 1e6:.3f}M params"
    layers = [layer for b in g.encoder + g.decoder for layer in b.layers]
    kept = [layer for layer in layers if layer.op != "skip"]
    ops = _count_ops(layer.op for layer in kept)
    widths = [layer.channels for layer in kept] or [0]
    line = (f"MoD-NAS: T={g.stages}, levels={g.levels}, {len(kept)}/{len(layers)} normal layers kept "
            f"({ops}), widths {min(widths)}–{max(widths)}, {params / 1e6:.3f}M params")
    if not kept:  # a skip-collapsed search (the DARTS failure mode): say so instead of shipping it quietly
        line += (" — warning: depth search removed every normal layer, only sampling/fusion convs remain; "
                 "search longer, or take an earlier evaluation's genotype from arch_log.jsonl")
    return line


# =========================================================================== optimisation helpers


def weight_optimizer(cfg: SearchConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.weight_optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg.weight_decay)


def arch_optimizer(cfg: SearchConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=cfg.arch_lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg.arch_weight_decay)


@contextmanager
def frozen(params: list[nn.Parameter]):
    """Exclude `params` from autograd for one update (restored afterwards)."""
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def average_gradients(params: list[nn.Parameter], world: int) -> None:
    """Mean of the gradients over all processes, in one flat all_reduce."""
    if world <= 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_parameters(model: nn.Module, world: int) -> None:
    """Start every process from rank 0's supernet (the seed already agrees; this makes sure)."""
    if world <= 1:
        return
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=0)


def shrink_l1(params: list[nn.Parameter], amount: float) -> None:
    """Proximal step of amount·Σ|β|: soft-threshold toward zero (exact zeros stay zero)."""
    if amount <= 0:
        return
    with torch.no_grad():
        for p in params:
            p.copy_(p.sign() * (p.abs() - amount).clamp_min(0))


# =========================================================================== searcher


class Searcher:
    def __init__(self, cfg: SearchConfig, run_dir: str | Path, *, show_progress: bool = True):
        self.cfg = cfg
        self.dist, self.device = init_process(cfg.device)  # first: a missing GPU fails before anything is written
        self.run = RunDir(run_dir, main=self.dist.main)
        self.show_progress = show_progress and self.dist.main
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.splits = split_images(cfg)
        self.data_w = self._patches(self.splits.train_w, seed=2 * cfg.seed)
        self.data_a = self._patches(self.splits.train_a, seed=2 * cfg.seed + 1)  # other crops and noise than W
        val_spec = cfg.val_degradation or default_val_spec(cfg.degradation)
        self.val_sigma = float(val_spec.split(":")[1]) if cfg.noise_map else None
        val_paths, self.val_unreadable = readable_images(self.splits.val[: cfg.val_images or None], warn=False)
        if not val_paths:
            raise RestoreError(f"none of the {len(self.val_unreadable)} Train V images is readable")
        self.val = load_val_images(val_paths, val_spec, cfg.channels)

        torch.manual_seed(cfg.seed)
        self.model = build_supernet(cfg).to(self.device)  # before the optimisers see its parameters
        broadcast_parameters(self.model, self.dist.world)
        self.weights = list(self.model.weights())
        self.arch = list(self.model.arch_parameters())
        self.betas = list(self.model.beta.values()) if isinstance(self.model, ModNASSupernet) else []
        self.opt_w = weight_optimizer(cfg, self.weights)
        self.opt_a = arch_optimizer(cfg, self.arch)
        self.loss = loss_fn(cfg.loss, cfg.ssim_weight)

        self.step = 0
        self.best = {"psnr": None, "ssim": None, "step": None}
        self.log = MetricLog(self.run.path / "metrics.csv", METRICS) if self.dist.main else None

    def _patches(self, paths: list[Path], seed: int) -> PatchDataset:
        return PatchDataset(paths, patch=self.cfg.patch, channels=self.cfg.channels, degradation=self.cfg.degradation,
                            length=self.cfg.batch, noise_map=self.cfg.noise_map, seed=seed,
                            warn=False)  # fit() logs the skipped ones

    # ------------------------------------------------------------------ state
    def state(self) -> dict:
        return {
            "step": self.step,
            "best": dict(self.best),
            "model": self.model.state_dict(),
            "opt_w": self.opt_w.state_dict(),
            "opt_a": self.opt_a.state_dict(),
            "rng": rng_state(),
            "config": asdict(self.cfg),
        }

    def skipped_report(self) -> list[str]:
        """Lines about the Train W / A / V images that could not be used."""
        unreadable = self.data_w.unreadable + self.data_a.unreadable + self.val_unreadable
        return skipped_report(unreadable, self.data_w.too_small + self.data_a.too_small, self.cfg.patch)

    def resume(self) -> bool:
        """Load the run's checkpoint, if any, and drop the log rows written after it."""
        if not self.run.checkpoint.exists():
            self._recover()  # a kill before the first checkpoint: the logs start afresh
            return False
        state = load_state(self.run.checkpoint)
        changed = structural_changes(state["config"], self.cfg)
        if changed:
            raise RestoreError(f"{self.run.path} holds a search with other {', '.join(changed)}; use a new --run")
        self.model.load_state_dict(state["model"])
        self.opt_w.load_state_dict(state["opt_w"])
        self.opt_a.load_state_dict(state["opt_a"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.best = dict(state["best"])
        self._recover()
        self.run.log(f"resumed at step {self.step}")
        return True

    def save_checkpoint(self) -> None:
        if self.dist.main:
            save_state(self.run.checkpoint, self.state())

    def _recover(self) -> None:
        """Drop log rows written after the checkpoint (a kill replays those steps)."""
        header = self.log.header if self.log else None
        self.run.recover(self.step, metrics_header=header, jsonl=[ARCH_LOG])

    # ------------------------------------------------------------------ steps
    def batch(self, data: PatchDataset, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        data.set_epoch(step)
        return stack_batch([data[i] for i in self.dist.shard(self.cfg.batch)], self.device)

    def _backward(self, data: PatchDataset, params: list[nn.Parameter]) -> float:
        x, y = self.batch(data, self.step)
        self.model.train()
        loss = self.loss(self.model(x), y)
        for p in params:
            p.grad = None
        loss.backward()
        average_gradients(params, self.dist.world)
        return float(loss.detach())

    def weight_step(self) -> float:
        set_lr(self.opt_w, cosine_lr(self.step, self.cfg.steps, self.cfg.lr, self.cfg.lr_min))
        with frozen(self.arch):
            loss = self._backward(self.data_w, self.weights)
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.weights, self.cfg.grad_clip)
        self.opt_w.step()
        return loss

    def arch_step(self) -> float:
        lr = cosine_lr(self.step, self.cfg.steps, self.cfg.arch_lr, self.cfg.arch_lr_min)
        set_lr(self.opt_a, lr)
        with frozen(self.weights):
            loss = self._backward(self.data_a, self.arch)
        faults.pause(f"arch/{self.step + 1}")
        self.opt_a.step()
        shrink_l1(self.betas, lr * self.cfg.beta_l1)
        return loss

    @property
    def searching(self) -> bool:
        """Whether this step updates the architecture (warm-up is over)."""
        return self.step >= self.cfg.warmup_steps

    def train_step(self) -> tuple[float, float | None]:
        loss = self.weight_step()
        arch_loss = self.arch_step() if self.searching else None
        self.step += 1
        return loss, arch_loss

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> tuple[float, float]:
        """Mean PSNR/SSIM of the supernet on Train V."""
        self.model.eval()
        size_multiple = 2**self.cfg.levels if isinstance(self.model, ModNASSupernet) else 1
        tiles = TileConfig(tile=None) if self.cfg.val_tile is None else TileConfig(
            tile=self.cfg.val_tile, overlap=max(2, self.cfg.val_tile // 8), batch_size=8)
        scores = []
        for _, degraded, clean in self.val:
            x = torch.from_numpy(degraded.transpose(2, 0, 1)).unsqueeze(0)
            if self.val_sigma is not None:
                x = append_noise_map(x, self.val_sigma)
            out = restore_tensor(self.model, x, config=tiles, size_multiple=size_multiple, out_channels=self.cfg.channels,
                                 device=self.device)
            pred = out[0].clamp(0, 1).numpy().transpose(1, 2, 0)
            scores.append((psnr(pred, clean, data_range=1.0), ssim(pred, clean, data_range=1.0)))
        return float(np.mean([s[0] for s in scores])), float(np.mean([s[1] for s in scores]))

    def _validate(self) -> dict:
        """Score Train V, log the architecture, keep the best supernet found after warm-up."""
        if not self.dist.main:
            return {}
        val_psnr, val_ssim = self.evaluate()
        genotype = derive_genotype(self.model, name=f"{self.cfg.space}-search-step{self.step}")
        searched = self.step > self.cfg.warmup_steps  # before that α/β/γ are still the random init
        entry = {"step": self.step, "val_psnr": val_psnr, "val_ssim": val_ssim, "searched": searched,
                 **arch_snapshot(self.model), "genotype": to_dict(genotype)}
        with open(self.run.path / ARCH_LOG, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
        if searched and self._improves(val_psnr, val_ssim):
            self.best = {"psnr": val_psnr, "ssim": val_ssim, "step": self.step}
            save_genotype(genotype, self.run.path / "best_genotype.json")
            self._save_supernet(self.run.path / "best_supernet.safetensors")
        return {"val_psnr": val_psnr, "val_ssim": val_ssim}

    def _improves(self, val_psnr: float, val_ssim: float) -> bool:
        if self.best["psnr"] is None:
            return True
        return (val_psnr, val_ssim) > (self.best["psnr"], self.best["ssim"])

    def _save_supernet(self, path: Path) -> None:
        save_tensors(path, self.model.state_dict())

    # ------------------------------------------------------------------ loop
    def fit(self, stop_at: int | None = None) -> dict:
        """Search until `steps` (or until `stop_at`, leaving a resumable checkpoint)."""
        cfg = self.cfg
        self.resume()
        self.run.save_config(cfg)
        end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
        n_w, n_a, n_v = len(self.data_w.paths), len(self.data_a.paths), len(self.val)
        losses, arch_losses = [], []
        t0 = time.time()
        with ProgressLog(self.run, cfg.steps, self.step, f"search {cfg.space}", self.show_progress) as progress:
            progress.note(f"searching {cfg.space} for {cfg.steps} steps (arch updates from step {cfg.warmup_steps}) on "
                          f"{n_w} W / {n_a} A / {n_v} V images, {self.dist.world} process(es) on {self.device}")
            for line in self.skipped_report():
                progress.note(line)
            while self.step < end:
                loss, arch_loss = self.train_step()
                losses.append(loss)
                if arch_loss is not None:
                    arch_losses.append(arch_loss)
                last = self.step == cfg.steps
                evaluate = self.step % cfg.eval_every == 0 or last
                if self.step % cfg.log_every == 0 or evaluate:
                    fields = {"time": round(time.time() - t0, 1), "lr": self.opt_w.param_groups[0]["lr"],
                              "arch_lr": self.opt_a.param_groups[0]["lr"] if arch_losses else None,
                              "loss": float(np.mean(losses)),
                              "arch_loss": float(np.mean(arch_losses)) if arch_losses else None}
                    losses.clear()
                    arch_losses.clear()
                    if evaluate:
                        fields.update(self._validate())
                    fields = {k: v for k, v in fields.items() if v is not None}
                    if self.log:
                        self.log.write(step=self.step, **fields)
                    progress.log_step(self.step, fields, loss=fields["loss"],
                                      **({"psnr": fields["val_psnr"]} if "val_psnr" in fields else {}))
                faults.pause(f"step/{self.step}")
                if self.step % cfg.checkpoint_every == 0 or self.step == end:
                    self.save_checkpoint()
        if self.step < cfg.steps:
            return {"steps": self.step, "finished": False}
        return self.finish()

    def finish(self) -> dict:
        """genotype.json (best by Train V PSNR, else the final one) and final_genotype.json."""
        final = derive_genotype(self.model, name=f"{self.cfg.space}-search-final")
        best_path = self.run.path / "best_genotype.json"
        summary = {"steps": self.step, "finished": True, "best_val_psnr": self.best["psnr"],
                   "best_step": self.best["step"], "genotype": str(self.run.path / "genotype.json")}
        if not self.dist.main:
            return summary
        from restore.models.build import build
        from restore.models.genotype import load_genotype
        from restore.runtime.profile import count_parameters

        save_genotype(final, self.run.path / "final_genotype.json")
        chosen = load_genotype(best_path) if best_path.exists() else final
        save_genotype(chosen, self.run.path / "genotype.json")
        summary["params"] = count_parameters(build(chosen))
        summary["description"] = describe(chosen, summary["params"])
        self.run.log(f"done: {summary}")
        return summary


def search(cfg: SearchConfig, run_dir: str | Path, *, show_progress: bool = True, stop_at: int | None = None) -> dict:
    """Run (or resume) a search in `run_dir`; returns a summary with the genotype path."""
    searcher = Searcher(cfg, run_dir, show_progress=show_progress)
    with leaving_process_group(searcher.dist):
        return searcher.fit(stop_at=stop_at)
