"""Search configuration: one typed dataclass, named presets (package data), JSON overrides.

Optimiser and loss fields left at ``None`` are filled from the search space's paper
setting (`SPACE_DEFAULTS`), so a resolved config — the one saved in the run directory —
always holds concrete values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from restore.config import config_from_dict, read_json_object
from restore.errors import RestoreError

SPACES = ("modnas", "hinas")

# The papers' search settings (IR-NAS §4.1 "Search settings"; MoD-NAS §4.1 "Search Settings").
SPACE_DEFAULTS: dict[str, dict[str, Any]] = {
    "modnas": dict(
        loss="mse",
        weight_optimizer="adam", lr=1e-3, lr_min=1e-5, momentum=0.9, weight_decay=0.0,
        arch_lr=1e-3, arch_lr_min=1e-5, arch_weight_decay=0.0,
        grad_clip=0.0,
        beta_l1=0.2,  # see SearchConfig.beta_l1
    ),
    "hinas": dict(
        loss="mse+logssim",
        weight_optimizer="sgd", lr=0.025, lr_min=0.001, momentum=0.9, weight_decay=3e-4,
        arch_lr=1e-3, arch_lr_min=1e-3, arch_weight_decay=1e-3,  # the paper gives no arch-lr decay
        grad_clip=5.0,  # DARTS / Auto-DeepLab convention; the paper is silent
        beta_l1=0.0,  # HiNAS β are transition logits, not channel gates: L1 does not apply
    ),
}

# Fields that fix the supernet's shape: a run cannot be resumed with different values.
STRUCTURAL = (
    "space", "channels", "noise_map", "modnas_channels", "stages", "levels", "layers_per_block",
    "unfold", "depth", "layers", "nodes", "base_width", "stem_channels", "weight_optimizer",
)


@dataclass
class SearchConfig:
    space: str = "modnas"  # "modnas" | "hinas"
    notes: str = ""  # free text: why a preset is sized the way it is
    # ---- data
    degradation: str = "awgn:25"  # restore.data.degradations.degradation_from_spec
    val_degradation: str | None = None  # None: a fixed setting derived from `degradation`
    channels: int = 1  # image channels: 1 = gray, 3 = colour
    noise_map: bool = False  # σ-map input channel (AWGN only)
    train_dirs: tuple[str, ...] = ()
    exclude_rain_backgrounds: bool = False
    val_fraction: float = 0.02  # Train V share of the images (IR-NAS: 2 %); the rest is halved into W / A
    val_images: int = 8  # Train V images scored per evaluation (0: all)
    val_tile: int | None = None  # None: whole-image evaluation; else tiles of this size (overlap tile/8)
    patch: int = 64
    batch: int = 12  # global batch (split across processes under torchrun)
    # ---- schedule
    steps: int = 23380  # one step = one weight update (+ one arch update after warm-up)
    warmup_fraction: float = 40 / 140  # share of the steps with weight updates only
    eval_every: int = 1000
    checkpoint_every: int = 50
    log_every: int = 25
    # ---- loss (None: the space's paper setting)
    loss: str | None = None  # "mse" (MoD-NAS Eq. 12) or "mse+logssim" (IR-NAS Eq. 7)
    ssim_weight: float = 0.5  # λ of IR-NAS Eq. 7
    # L1 sparsity on MoD-NAS β (network slimming), applied as a proximal step after each
    # Adam arch update: β ← sign(β)·max(|β| − arch_lr·beta_l1, 0). Adam normalises the
    # gradient scale, so a penalty added to the loss would act with a strength that depends
    # on the (tiny, loss-dependent) data gradient of β; the proximal form makes beta_l1 the
    # shrink per step as a fraction of the arch learning rate, whatever the loss: β whose
    # gradient is less consistent than that drift to 0 and Eq. 10 drops them. Default
    # (MoD-NAS) 0.2; 0 disables (β then stays near 1 and the 90 % rule keeps almost all).
    beta_l1: float | None = None
    # ---- optimisers (None: the space's paper setting)
    weight_optimizer: str | None = None  # "sgd" | "adam"
    lr: float | None = None  # weights: cosine from lr to lr_min over `steps`
    lr_min: float | None = None
    momentum: float | None = None  # SGD only
    weight_decay: float | None = None
    arch_lr: float | None = None  # architecture: Adam, cosine from arch_lr to arch_lr_min
    arch_lr_min: float | None = None
    arch_weight_decay: float | None = None
    grad_clip: float | None = None  # weight-gradient norm clip (0 disables)
    # ---- MoD-NAS search space
    modnas_channels: int = 48  # C
    stages: int = 2  # T
    levels: int = 3
    layers_per_block: int = 3
    unfold: bool = True
    depth: str = "dense"  # "dense" (γ) | "skip"
    # ---- HiNAS search space
    layers: int = 4  # cells (IR-NAS: 4 for denoising, 3 for de-raining)
    nodes: int = 5
    base_width: int = 10  # W
    stem_channels: int = 64
    # ---- run
    seed: int = 0
    threads: int = 0  # 0: torch default
    device: str = "auto"  # "auto" (a CUDA GPU if there is one), "cpu", "cuda" or "cuda:N"; checkpoints resume on any device

    def __post_init__(self):
        if self.space not in SPACES:
            raise RestoreError(f"space must be one of {', '.join(SPACES)}, got {self.space!r}")
        for key, value in SPACE_DEFAULTS[self.space].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        self._check()

    def _check(self) -> None:
        if self.channels not in (1, 3):
            raise RestoreError(f"channels must be 1 or 3, got {self.channels}")
        if self.loss not in ("mse", "mse+logssim"):
            raise RestoreError(f"loss must be 'mse' or 'mse+logssim', got {self.loss!r}")
        if self.weight_optimizer not in ("sgd", "adam"):
            raise RestoreError(f"weight_optimizer must be 'sgd' or 'adam', got {self.weight_optimizer!r}")
        for key in ("patch", "batch", "steps", "eval_every", "checkpoint_every", "log_every",
                    "modnas_channels", "stages", "levels", "layers_per_block", "layers", "nodes",
                    "base_width", "stem_channels"):
            if getattr(self, key) < 1:
                raise RestoreError(f"{key} must be at least 1, got {getattr(self, key)}")
        if not 0 <= self.warmup_fraction < 1:
            raise RestoreError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if not 0 < self.val_fraction < 1:
            raise RestoreError(f"val_fraction must be between 0 and 1, got {self.val_fraction}")
        if self.val_images < 0:
            raise RestoreError(f"val_images must be >= 0, got {self.val_images}")
        if self.val_tile is not None and self.val_tile < 16:
            raise RestoreError(f"val_tile must be at least 16 (or null for whole images), got {self.val_tile}")
        for key in ("lr", "lr_min", "arch_lr", "arch_lr_min", "weight_decay", "arch_weight_decay",
                    "grad_clip", "beta_l1", "momentum", "ssim_weight"):
            if getattr(self, key) < 0:
                raise RestoreError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.space == "hinas" and self.beta_l1 > 0:
            raise RestoreError("beta_l1 applies to MoD-NAS only (HiNAS β are width-transition weights)")
        if self.noise_map and not self.degradation.startswith("awgn"):
            raise RestoreError("noise_map applies to AWGN degradations only")
        if self.depth not in ("dense", "skip"):
            raise RestoreError(f"depth must be 'dense' or 'skip', got {self.depth!r}")

    @property
    def warmup_steps(self) -> int:
        """Steps before the first architecture update (weights only)."""
        return round(self.warmup_fraction * self.steps)


# ----------------------------------------------------------------------------- presets


def _preset_folder():
    return resources.files("restore.search") / "presets"


def list_presets() -> list[str]:
    return sorted(p.name[: -len(".json")] for p in _preset_folder().iterdir() if p.name.endswith(".json"))


def preset_dict(name: str) -> dict:
    path = _preset_folder() / f"{name}.json"
    if not path.is_file():
        raise RestoreError(f"unknown search preset {name!r} (known: {', '.join(list_presets())})")
    return json.loads(path.read_text(encoding="utf-8"))


def make_config(preset: str | None = None, config_file: str | Path | None = None, **overrides) -> SearchConfig:
    """Layer a preset, then a JSON config file, then overrides (None values are ignored).

    Unknown keys anywhere raise a RestoreError naming the known ones."""
    data: dict = preset_dict(preset) if preset else {}
    where = f"search preset {preset!r}" if preset else "search config"
    if config_file is not None:
        data.update(read_json_object(config_file))
        where = str(config_file)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return config_from_dict(SearchConfig, data, where=where)


def structural_changes(old: dict, new: SearchConfig) -> list[str]:
    """Fields that differ between a checkpoint's config and `new` and fix the supernet."""
    return [k for k in STRUCTURAL if k in old and old[k] != getattr(new, k)]


__all__ = [
    "SPACES",
    "SPACE_DEFAULTS",
    "SearchConfig",
    "list_presets",
    "make_config",
    "preset_dict",
    "structural_changes",
]
