"""Training and evaluation data: degradations (AWGN, JPEG, camera noise, rain), folder
datasets, and search splits. Arrays are H×W×C float32 in [0, 1]; tensors C×H×W."""

from restore.data.camera import CameraNoise
from restore.data.datasets import (
    IMAGE_EXTENSIONS,
    RAIN100H_BACKGROUND_IDS,
    EvalSet,
    PairedFolder,
    PatchDataset,
    exclude_rain_backgrounds,
    list_images,
    rain100l_pairing,
)
from restore.data.degradations import (
    AWGN,
    JPEG,
    Degradation,
    LevelDegradation,
    awgn_benchmark_noise,
    degradation_from_spec,
    degrade_for_eval,
    eval_rng,
    jpeg_roundtrip,
)
from restore.data.rain import RAIN_PRESETS, RainStreaks
from restore.data.splits import split_train_arch_val, split_two

__all__ = [
    "AWGN",
    "IMAGE_EXTENSIONS",
    "JPEG",
    "RAIN100H_BACKGROUND_IDS",
    "RAIN_PRESETS",
    "CameraNoise",
    "Degradation",
    "EvalSet",
    "LevelDegradation",
    "PairedFolder",
    "PatchDataset",
    "RainStreaks",
    "awgn_benchmark_noise",
    "degradation_from_spec",
    "degrade_for_eval",
    "eval_rng",
    "exclude_rain_backgrounds",
    "jpeg_roundtrip",
    "list_images",
    "rain100l_pairing",
    "split_train_arch_val",
    "split_two",
]
