"""Python API: numpy / PIL / tensor in, the same kind out; channels, alpha and σ handled."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import restore
from restore.errors import RestoreError
from restore.metrics import psnr

EXAMPLES = Path(__file__).resolve().parents[1] / "restore" / "examples"


@pytest.fixture(scope="module")
def gray():
    return restore.load()


def test_numpy_uint8_roundtrip_and_quality(gray):
    noisy = np.asarray(Image.open(EXAMPLES / "monarch_noisy_s25.png"))
    clean = np.asarray(Image.open(EXAMPLES / "monarch.png"))
    out = gray(noisy)
    assert out.dtype == np.uint8 and out.shape == noisy.shape
    assert psnr(out, clean, data_range=255) > psnr(noisy, clean, data_range=255) + 3
    assert gray.last.sigma is not None and 15 < gray.last.sigma < 35  # blind estimate near 25


def test_known_sigma_is_used(gray):
    noisy = np.asarray(Image.open(EXAMPLES / "monarch_noisy_s25.png"), dtype=np.float32) / 255
    gray(noisy, sigma=25)
    assert gray.last.sigma == 25


def test_pil_colour_with_alpha_passes_alpha_through(gray):
    rgb = Image.open(EXAMPLES / "birds_noisy_s25.png").crop((0, 0, 120, 90))
    alpha = Image.linear_gradient("L").resize(rgb.size)
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    out = gray(rgba)
    assert isinstance(out, Image.Image) and out.mode == "RGBA" and out.size == rgba.size
    assert np.array_equal(np.asarray(out)[..., 3], np.asarray(alpha))


def test_tensor_in_tensor_out(gray):
    x = torch.rand(2, 1, 40, 56)
    y = gray(x, sigma=10)
    assert isinstance(y, torch.Tensor) and y.shape == x.shape
    assert 0 <= y.min() and y.max() <= 1


def test_uint16_and_float(gray):
    img16 = (np.random.default_rng(0).random((48, 64)) * 65535).astype(np.uint16)
    assert gray(img16).dtype == np.uint16
    assert gray(img16.astype(np.float64) / 65535).dtype == np.float64


def test_bad_inputs(gray):
    with pytest.raises(RestoreError, match="cannot restore a str"):
        gray("photo.png")
    with pytest.raises(RestoreError, match="unsupported array dtype"):
        gray(np.zeros((8, 8), dtype=np.int32))
