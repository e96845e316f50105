from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim

from restore.errors import RestoreError
from restore.metrics import log_ssim_loss, mse_log_ssim_loss, psnr, rgb_to_y, ssim, ssim_torch


def _pair(shape, noise=0.08, seed=0):
    """A smooth-ish clean image and a noisy copy, both float64 in [0, 1]."""
    rng = np.random.default_rng(seed)
    h, w = shape[:2]
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    clean = 0.5 + 0.4 * np.sin(6 * xx + 3 * yy)
    if len(shape) == 3:
        clean = np.stack([clean * (0.6 + 0.2 * c) + 0.1 * c for c in range(shape[2])], axis=2)
    clean = np.clip(clean + 0.05 * rng.standard_normal(clean.shape), 0, 1)
    noisy = np.clip(clean + noise * rng.standard_normal(clean.shape), 0, 1)
    return clean, noisy


def _sk_ssim(x, y, data_range, channel_axis=None):
    return sk_ssim(
        x, y, data_range=data_range, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, channel_axis=channel_axis,
    )


def _nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.transpose(2, 0, 1).copy()).unsqueeze(0)


# ------------------------------------------------------------------------------ PSNR


def test_psnr_constant_offset_is_closed_form():
    x = np.full((16, 16), 0.5)
    assert psnr(x, x + 0.1, data_range=1.0) == pytest.approx(20.0, abs=1e-9)  # 10·log10(1/0.01)
    assert psnr(x * 255, x * 255 + 25.5, data_range=255) == pytest.approx(20.0, abs=1e-9)


def test_psnr_identical_is_inf():
    x, _ = _pair((20, 20, 3))
    assert psnr(x, x, data_range=1.0) == math.inf


@pytest.mark.parametrize("shape", [(40, 50), (40, 50, 3)])
def test_psnr_matches_skimage(shape):
    x, y = _pair(shape)
    assert psnr(x, y, data_range=1.0) == pytest.approx(sk_psnr(x, y, data_range=1.0), abs=1e-9)


def test_psnr_crop_border_matches_skimage_on_cropped():
    x, y = _pair((40, 50, 3))
    y[:4] = 0  # damage only the border: cropping must remove it from the score
    expected = sk_psnr(x[4:-4, 4:-4], y[4:-4, 4:-4], data_range=1.0)
    assert psnr(x, y, data_range=1.0, crop_border=4) == pytest.approx(expected, abs=1e-9)
    assert psnr(x, y, data_range=1.0) < expected


def test_psnr_uint8_input_does_not_wrap():
    x = np.full((8, 8), 10, np.uint8)
    y = np.full((8, 8), 250, np.uint8)  # uint8 subtraction would wrap to 16
    assert psnr(x, y, data_range=255) == pytest.approx(10 * math.log10(255**2 / 240**2))


def test_psnr_accepts_tensors_in_any_layout():
    x, y = _pair((24, 30, 3))
    expected = psnr(x, y, data_range=1.0)
    tx, ty = _nchw(x), _nchw(y)
    assert psnr(tx, ty, data_range=1.0) == pytest.approx(expected, abs=1e-9)
    assert psnr(tx[0], ty[0], data_range=1.0) == pytest.approx(expected, abs=1e-9)
    x2, y2 = _pair((24, 30, 3), seed=1)
    batch = psnr(torch.cat([tx, _nchw(x2)]), torch.cat([ty, _nchw(y2)]), data_range=1.0)
    assert batch == pytest.approx((expected + psnr(x2, y2, data_range=1.0)) / 2)  # mean over images


# ------------------------------------------------------------------------ Y channel


def test_rgb_to_y_matches_matlab_rgb2ycbcr():
    assert rgb_to_y(np.zeros((1, 1, 3)))[0, 0, 0] == pytest.approx(16 / 255)
    assert rgb_to_y(np.ones((1, 1, 3)))[0, 0, 0] == pytest.approx(235 / 255)
    pixel = np.array([[[0.2, 0.5, 0.9]]])
    hand = (16 + 65.481 * 0.2 + 128.553 * 0.5 + 24.966 * 0.9) / 255
    assert rgb_to_y(pixel)[0, 0, 0] == pytest.approx(hand)
    t = torch.tensor([0.2, 0.5, 0.9]).view(1, 3, 1, 1)
    assert rgb_to_y(t).shape == (1, 1, 1, 1)
    assert float(rgb_to_y(t)) == pytest.approx(hand, abs=1e-6)


def test_rgb_to_y_passes_gray_through():
    gray = np.random.default_rng(0).random((5, 6, 1))
    assert rgb_to_y(gray) is gray


def test_y_channel_metrics_use_hand_computed_luma():
    x, y = _pair((30, 40, 3))
    weights = np.array([65.481, 128.553, 24.966])
    y_x, y_y = (16 + x @ weights) / 255, (16 + y @ weights) / 255
    assert psnr(x, y, data_range=1.0, y_channel=True) == pytest.approx(sk_psnr(y_x, y_y, data_range=1.0), abs=1e-9)
    assert ssim(x, y, data_range=1.0, y_channel=True) == pytest.approx(_sk_ssim(y_x, y_y, 1.0), abs=1e-6)
    # on the 0–255 scale the same images give the same PSNR
    assert psnr(x * 255, y * 255, data_range=255, y_channel=True) == pytest.approx(
        psnr(x, y, data_range=1.0, y_channel=True), abs=1e-9
    )


# ------------------------------------------------------------------------------ SSIM


def test_ssim_gray_matches_skimage():
    x, y = _pair((64, 48))
    assert ssim(x, y, data_range=1.0) == pytest.approx(_sk_ssim(x, y, 1.0), abs=1e-4)


def test_ssim_colour_matches_skimage():
    x, y = _pair((48, 64, 3))
    assert ssim(x, y, data_range=1.0) == pytest.approx(_sk_ssim(x, y, 1.0, channel_axis=2), abs=1e-4)


def test_ssim_float32_and_255_scale_match_skimage():
    x, y = _pair((40, 40, 3), noise=0.2)
    x8, y8 = np.rint(x * 255), np.rint(y * 255)
    assert ssim(x8, y8, data_range=255) == pytest.approx(_sk_ssim(x8, y8, 255, channel_axis=2), abs=1e-4)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    assert ssim(x32, y32, data_range=1.0) == pytest.approx(_sk_ssim(x32, y32, 1.0, channel_axis=2), abs=1e-4)


def test_ssim_crop_border_matches_skimage_on_cropped():
    x, y = _pair((50, 60, 3))
    expected = _sk_ssim(x[5:-5, 5:-5], y[5:-5, 5:-5], 1.0, channel_axis=2)
    assert ssim(x, y, data_range=1.0, crop_border=5) == pytest.approx(expected, abs=1e-4)


def test_ssim_identical_is_one():
    x, _ = _pair((32, 32, 3))
    assert ssim(x, x, data_range=1.0) == pytest.approx(1.0, abs=1e-12)


# ------------------------------------------------------------------------ torch SSIM


def test_ssim_torch_equals_numpy_ssim():
    pairs = [_pair((40, 44, 3), seed=s) for s in (0, 1)]
    x = torch.cat([_nchw(a) for a, _ in pairs]).float()
    y = torch.cat([_nchw(b) for _, b in pairs]).float()
    expected = np.mean([ssim(a, b, data_range=1.0) for a, b in pairs])
    assert float(ssim_torch(x, y)) == pytest.approx(expected, abs=1e-4)
    assert float(ssim_torch(x[0], y[0])) == pytest.approx(ssim(*pairs[0], data_range=1.0), abs=1e-4)


def test_ssim_torch_gradients_flow():
    x, y = _pair((32, 32, 3))
    pred = _nchw(y).float().requires_grad_(True)
    loss = 1 - ssim_torch(pred, _nchw(x).float())
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    assert pred.grad.abs().sum() > 0


def test_log_ssim_loss_definition_and_gradients():
    x, y = _pair((32, 32))
    target, pred = _nchw(x[..., None]).float(), _nchw(y[..., None]).float().requires_grad_(True)
    value = log_ssim_loss(pred, target)
    expected = math.log10(1 / ssim_torch(pred, target).item())
    assert value.item() == pytest.approx(expected, rel=1e-5)
    assert float(log_ssim_loss(target, target)) == pytest.approx(0.0, abs=1e-6)
    value.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_log_ssim_loss_is_finite_for_anticorrelated_images():
    x, _ = _pair((32, 32))
    target = _nchw(x[..., None]).float()
    assert torch.isfinite(log_ssim_loss(1 - target, target))


def test_mse_log_ssim_loss_combines_terms():
    x, y = _pair((32, 32, 3))
    target, pred = _nchw(x).float(), _nchw(y).float().requires_grad_(True)
    mse = torch.mean((pred - target) ** 2)
    expected = mse + 0.25 * log_ssim_loss(pred, target)
    loss = mse_log_ssim_loss(pred, target, lam=0.25)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call",
    [
        lambda x, y: psnr(x, y[:-1], data_range=1.0),  # shape mismatch
        lambda x, y: psnr(x, y, data_range=0),
        lambda x, y: psnr(x, y, data_range=1.0, crop_border=-1),
        lambda x, y: psnr(x, y, data_range=1.0, crop_border=10),  # nothing left
        lambda x, y: ssim(x[:8, :8], y[:8, :8], data_range=1.0),  # smaller than the window
        lambda x, y: ssim_torch(_nchw(x)[..., :8, :8], _nchw(y)[..., :8, :8]),
        lambda x, y: psnr(np.zeros((20, 20, 2)), np.zeros((20, 20, 2)), data_range=1.0, y_channel=True),
    ],
)
def test_mistakes_raise_restore_error(call):
    x, y = _pair((20, 20, 3))
    with pytest.raises(RestoreError):
        call(x, y)


def test_data_range_is_required():
    x, y = _pair((16, 16))
    with pytest.raises(TypeError):
        psnr(x, y)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ssim(x, y)  # type: ignore[call-arg]
