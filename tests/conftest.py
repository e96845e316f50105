from __future__ import annotations

import os
from pathlib import Path

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
