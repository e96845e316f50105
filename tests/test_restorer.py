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


def test_correlated_noise_is_flagged_only_when_asked_and_never_changes_the_output(gray, tmp_path,
                                                                               save_with_correlated_noise):
    """Blind calls check the noise for correlation (the CLI's and app's note); eval skips the
    check (`check_noise=False`) and gets the same pixels."""
    clean = np.asarray(Image.open(EXAMPLES / "monarch.png"), dtype=np.float32) / 255
    noisy = np.asarray(Image.open(save_with_correlated_noise(clean, tmp_path / "camera.png")),
                       dtype=np.float32)[..., None] / 255
    checked = gray.restore_array(noisy)
    assert gray.last.correlated_noise
    unchecked = gray.restore_array(noisy, check_noise=False)
    assert not gray.last.correlated_noise and np.array_equal(checked, unchecked)
    gray.restore_array(noisy, sigma=25)
    assert not gray.last.correlated_noise  # σ given: nothing is estimated


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


# ------------------------------------------------------------------ input validation


def _small(seed=0):
    return np.random.default_rng(seed).random((16, 20)).astype(np.float32)


def _sigma_restorer(level_range):
    """A σ-conditioned one-conv model (image + σ map in, gray out) with the given range."""
    from restore.restorer import Restorer
    from restore.zoo.registry import ModelEntry

    entry = ModelEntry("tiny", "denoise", 1, noise_map=True, level_range=level_range)
    return Restorer(torch.nn.Conv2d(2, 1, 3, padding=1), entry, device="cpu")


@pytest.mark.parametrize("sigma", [float("nan"), float("inf"), -float("inf"), -1, 75.5, 1000])
def test_sigma_outside_the_trained_range_is_refused(gray, sigma):
    with pytest.raises(RestoreError, match=r"^σ must be between 0 and 75 \(the range denoise-gray was trained for\), got "):
        gray(_small(), sigma=sigma)


def test_sigma_at_the_ends_of_the_range_is_used(gray):
    for sigma in (0, 75):
        gray(_small(), sigma=sigma)
        assert gray.last.sigma == sigma


def test_sigma_without_a_known_range_must_be_finite_and_not_negative():
    r = _sigma_restorer(level_range=None)
    r(_small(), sigma=500)  # no range to check against: any finite σ ≥ 0
    for sigma in (float("nan"), float("inf"), -3):
        with pytest.raises(RestoreError, match="σ must be a finite number ≥ 0"):
            r(_small(), sigma=sigma)


def test_models_without_sigma_still_refuse_one():
    from restore.restorer import Restorer
    from restore.zoo.registry import ModelEntry

    r = Restorer(torch.nn.Conv2d(1, 1, 3, padding=1), ModelEntry("fixed", "denoise", 1), device="cpu")
    with pytest.raises(RestoreError, match="takes no --sigma"):
        r(_small(), sigma=25)


def test_cli_sigma_out_of_range_is_a_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from restore.cli import app

    src = tmp_path / "a.png"
    Image.fromarray((_small() * 255).astype(np.uint8)).save(src)
    result = CliRunner().invoke(app, ["denoise", str(src), "-o", str(tmp_path / "out"), "--sigma", "1000"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip() == "error: σ must be between 0 and 75 (the range denoise-gray was trained for), got 1000"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["numpy", "tensor"])
def test_float_input_on_the_0_255_scale_is_refused_not_clipped_to_white(gray, kind):
    pixels = _small() * 255
    image = pixels if kind == "numpy" else torch.from_numpy(pixels)[None]
    with pytest.raises(RestoreError, match=r"float pixels must be in \[0, 1\].*divide 0–255 data by 255"):
        gray(image)


def test_integer_tensors_are_refused(gray):
    with pytest.raises(RestoreError, match=r"tensors must be float in \[0, 1\], got torch.uint8"):
        gray(torch.from_numpy((_small() * 255).astype(np.uint8))[None])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("kind", ["numpy", "tensor"])
def test_nan_or_infinite_pixels_are_refused(gray, kind, bad):
    pixels = _small()
    pixels[3, 4] = bad
    image = pixels if kind == "numpy" else torch.from_numpy(pixels)[None]
    with pytest.raises(RestoreError, match="NaN or infinite pixels"):
        gray(image)


def test_unclipped_noisy_float_input_is_accepted(gray):
    """Benchmark noise is not clipped: σ = 75 noise pushes pixels well past [0, 1]."""
    rng = np.random.default_rng(1)
    clean = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))
    noisy = clean + rng.normal(0, 75 / 255, clean.shape).astype(np.float32)
    assert noisy.min() < -0.5 and noisy.max() > 1.5
    out = gray(noisy, sigma=75)
    assert out.shape == noisy.shape and 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize("image", [np.zeros((0, 8), np.float32), np.zeros((8, 0, 3), np.uint8),
                                   torch.zeros(0, 1, 8, 8), torch.zeros(1, 1, 0, 8), torch.zeros(1, 8, 0)],
                         ids=["numpy-HxW", "numpy-HxWxC", "tensor-batch", "tensor-NCHW", "tensor-CHW"])
def test_empty_images_are_refused(gray, image):
    with pytest.raises(RestoreError, match=r"the image is empty \(shape "):
        gray(image)


def test_arrays_and_tensors_of_the_wrong_rank_are_refused(gray):
    with pytest.raises(RestoreError, match="expected an H×W or H×W×C array, got shape"):
        gray(np.zeros(8, np.float32))
    with pytest.raises(RestoreError, match="expected a C×H×W or N×C×H×W tensor with 1 or 3 channels"):
        gray(torch.zeros(8))
    with pytest.raises(RestoreError, match="expected a C×H×W or N×C×H×W tensor with 1 or 3 channels"):
        gray(torch.zeros(2, 16, 16))


def test_2d_tensor_is_a_gray_image_like_a_2d_array(gray):
    pixels = _small()
    out = gray(torch.from_numpy(pixels), sigma=25)
    assert isinstance(out, torch.Tensor) and out.shape == (16, 20)
    assert np.array_equal(out.numpy(), gray(pixels, sigma=25))


@pytest.mark.parametrize("mode, dtype", [("I;16", "<u2"), ("I;16B", ">u2"), ("I", "<i4")])
def test_16_bit_pil_images_stay_16_bit_gray(gray, mode, dtype):
    values = (_small() * 65535).astype(np.uint16)
    image = Image.frombytes(mode, (20, 16), values.astype(dtype).tobytes())
    out = gray(image, sigma=25)
    assert isinstance(out, Image.Image) and out.mode == mode and out.size == image.size
    assert np.array_equal(np.asarray(out).astype(np.uint16), gray(values, sigma=25))  # all 16 bits kept


def test_pil_mode_i_beyond_16_bits_is_refused(gray):
    with pytest.raises(RestoreError, match=r"must hold 16-bit values \(0–65535\), got 0–70000"):
        gray(Image.fromarray(np.array([[0, 70000]], np.int32)))


def test_palette_images_come_back_as_rgb_or_rgba(gray):
    """The documented choice: a palette cannot hold the restored colours, so no P comes back."""
    palette = Image.fromarray((_small() * 255).astype(np.uint8)).convert("RGB").quantize(8)
    assert gray(palette).mode == "RGB"
    palette.info["transparency"] = 0
    assert gray(palette).mode == "RGBA"
