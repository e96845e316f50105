"""Training configuration: one typed dataclass, JSON in the run directory, CLI overrides."""

from __future__ import annotations

from dataclasses import dataclass

from restore.errors import RestoreError
from restore.runtime.precision import PRECISIONS


@dataclass
class TrainConfig:
    model: str = "modnas-b"  # preset name or genotype JSON path
    channels: int = 1  # 1 = gray, 3 = colour
    noise_map: bool = False  # σ-map input channel (one network for a σ range)
    stages: int | None = None  # MoD-NAS unfolding stages T (None: the genotype's)
    width: float = 1.0  # width factor on the genotype (search narrow, train wide; multiples of 8)
    degradation: str = "awgn:25"  # see restore.data.degradations.degradation_from_spec
    val_degradation: str | None = None  # None: a fixed setting derived from `degradation`
    train_dirs: tuple[str, ...] = ()
    val_dir: str | None = None  # None: hold out `val_holdout` training images
    val_holdout: int = 8
    val_images: int = 8  # how many validation images are scored
    exclude_rain_backgrounds: bool = False  # drop BSD200 scenes that are Rain100H backgrounds
    patch: int = 64
    batch: int = 16  # global batch (split across processes under torchrun)
    steps: int = 20000
    lr: float = 1e-3
    lr_min: float = 1e-5  # cosine annealing from lr to lr_min over `steps` (MoD-NAS)
    loss: str = "mse"  # "mse" or "mse+logssim" (IR-NAS Eq. 7, λ = ssim_weight)
    ssim_weight: float = 0.5
    ema: float = 0.999  # EMA decay of the weights (0 disables)
    grad_clip: float = 0.0  # 0 disables
    val_every: int = 500
    checkpoint_every: int = 50
    compact_checkpoint: bool = False  # bf16 optimizer moments + EMA delta: ~60 % of the bytes, near-exact resume
    log_every: int = 25
    seed: int = 0
    threads: int = 0  # 0: torch default
    channels_last: bool = True  # 1.3–2× faster CPU convs here
    precision: str = "fp32"  # "bf16": convs under bf16 autocast, ~2× faster where the CPU has native bf16; "auto"
    device: str = "auto"  # "auto" (a CUDA GPU if there is one), "cpu", "cuda" or "cuda:N"; checkpoints resume on any device
    init_from: str | None = None  # warm start: a .safetensors of model weights
    grow: bool = False  # init_from is a shallower net; the added residual blocks start as identities

    def __post_init__(self):
        if self.channels not in (1, 3):
            raise RestoreError(f"channels must be 1 or 3, got {self.channels}")
        if self.loss not in ("mse", "mse+logssim"):
            raise RestoreError(f"loss must be 'mse' or 'mse+logssim', got {self.loss!r}")
        for key in ("patch", "batch", "steps", "val_every", "checkpoint_every", "log_every"):
            if getattr(self, key) < 1:
                raise RestoreError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.noise_map and not self.degradation.startswith("awgn"):
            raise RestoreError("noise_map applies to AWGN degradations only")
        if not 0 < self.width <= 8:
            raise RestoreError(f"width must be in (0, 8], got {self.width}")
        if self.grow and not self.init_from:
            raise RestoreError("grow needs init_from: the weights of the network being deepened")
        if not 0 <= self.ema < 1:
            raise RestoreError(f"ema must be in [0, 1), got {self.ema}")
        if not self.lr > 0:  # also catches NaN
            raise RestoreError(f"lr must be positive, got {self.lr}")
        for key in ("lr_min", "ssim_weight", "grad_clip"):
            if not getattr(self, key) >= 0:
                raise RestoreError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.precision not in PRECISIONS:
            raise RestoreError(f"precision must be {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}, got {self.precision!r}")
        if self.lr_min > self.lr:
            raise RestoreError(f"lr_min ({self.lr_min}) must not exceed lr ({self.lr})")
