from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    env = os.environ.get("RESTORE_SHARED")
    if env:
        return Path(env)
    # a CI clone has shared/ beside it; the developer work tree has it one more level up
    for cand in (REPO.parent / "shared", REPO.parent.parent / "shared"):
        if cand.is_dir():
            return cand
    return REPO.parent / "shared"


SHARED = _shared_dir()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not available")
    return SHARED


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


TINY_MODNAS = {
    "format": "restore-genotype", "version": 1, "space": "modnas", "name": "tiny",
    "head_channels": 8, "stages": 1, "in_channels": 1, "out_channels": 1, "noise_map": False,
    "encoder": [{"layers": [{"op": "conv_3x3", "channels": 8}], "sample": {"op": "area", "channels": 8}}],
    "decoder": [
        {"layers": [{"op": "conv_3x3", "channels": 8}], "sample": {"op": "nearest", "channels": 8}},
        {"layers": [{"op": "res_block_3x3", "channels": 8}], "sample": None, "fuse_channels": 8},
    ],
}


@pytest.fixture(scope="session")
def tiny_genotype(tmp_path_factory) -> Path:
    import json

    path = tmp_path_factory.mktemp("geno") / "tiny.json"
    path.write_text(json.dumps(TINY_MODNAS))
    return path


@pytest.fixture(scope="session")
def tiny_train_dir(tmp_path_factory, shared_dir) -> Path:
    """Twelve Train400 images: enough for patches, a hold-out and fast tests."""
    import shutil

    folder = tmp_path_factory.mktemp("train")
    for src in sorted((shared_dir / "data/train/Train400").glob("*.png"))[:12]:
        shutil.copy(src, folder / src.name)
    return folder


@pytest.fixture(scope="session")
def save_with_correlated_noise():
    """Writes `clean` (H×W or H×W×C in [0, 1]) plus noise shared between neighbouring pixels
    (3×3 box-filtered white noise, σ 0.25 before the filter) as an 8-bit PNG: the blind σ
    estimate reads it low, as it reads camera noise, and flags it as correlated."""

    def save(clean: np.ndarray, path: Path, seed: int = 0) -> Path:
        from PIL import Image

        white = torch.from_numpy(np.random.default_rng(seed).normal(0, 0.25, clean.shape))
        planes = white[None] if white.ndim == 2 else white.permute(2, 0, 1)
        box = torch.nn.functional.avg_pool2d(planes[None], 3, 1, 1, count_include_pad=False)[0]
        noise = (box[0] if white.ndim == 2 else box.permute(1, 2, 0)).numpy()
        Image.fromarray(np.round(np.clip(clean + noise, 0, 1) * 255).astype(np.uint8)).save(path)
        return path

    return save
