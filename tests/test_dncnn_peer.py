"""The DnCNN peer loader shared by `restore eval` and the benchmarks."""

from __future__ import annotations

import pytest
import torch

from restore.errors import RestoreError
from restore.models.dncnn import load_peer


def test_missing_peer_weights_are_a_user_error(tmp_path):
    with pytest.raises(RestoreError, match="DnCNN weights not found"):
        load_peer(tmp_path / "nope.safetensors")


def test_non_safetensors_file_is_a_user_error(tmp_path):
    bogus = tmp_path / "dncnn.safetensors"
    bogus.write_bytes(b"not a safetensors file")
    with pytest.raises(RestoreError, match="cannot read weights"):
        load_peer(bogus)


def test_shipped_peer_loads_in_inference_mode_and_denoises(shared_dir):
    net = load_peer(shared_dir / "peers" / "dncnn_sigma25.safetensors")
    assert not net.training  # BatchNorm must use its running statistics
    g = torch.Generator().manual_seed(0)
    clean = torch.full((1, 1, 48, 48), 0.5)
    noisy = clean + 25 / 255 * torch.randn(clean.shape, generator=g)
    with torch.no_grad():
        out = net(noisy)
    assert (out - clean).pow(2).mean() < 0.25 * (noisy - clean).pow(2).mean()
