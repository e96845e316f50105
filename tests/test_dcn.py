"""DCNv2 custom op: exactness against a per-pixel reference, gradients, module, FLOPs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from restore.errors import RestoreError
from restore.models.dcn import DeformConv2d, deform_conv2d


def _bilinear(img: np.ndarray, y: float, x: float) -> np.ndarray:
    """Bilinear sample of a C×H×W array; corners outside the image contribute zero."""
    _, h, w = img.shape
    y0, x0 = math.floor(y), math.floor(x)
    out = np.zeros(img.shape[0])
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * img[:, yy, xx]
    return out


def _reference(x, offset, mask, weight, bias, stride, padding, dilation) -> np.ndarray:
    """Textbook DCNv2: for each output pixel and tap, sample, modulate, accumulate."""
    x, offset, mask, weight = (t.double().numpy() for t in (x, offset, mask, weight))
    n_, c, _, _ = x.shape
    cout, _, kh, kw = weight.shape
    ho_, wo_ = offset.shape[-2:]
    out = np.zeros((n_, cout, ho_, wo_))
    for n in range(n_):
        for ho in range(ho_):
            for wo in range(wo_):
                cols = np.zeros((c, kh, kw))
                for i in range(kh):
                    for j in range(kw):
                        t = i * kw + j
                        y = ho * stride - padding + i * dilation + offset[n, 2 * t, ho, wo]
                        xx = wo * stride - padding + j * dilation + offset[n, 2 * t + 1, ho, wo]
                        cols[:, i, j] = mask[n, t, ho, wo] * _bilinear(x[n], y, xx)
                out[n, :, ho, wo] = np.einsum("ocij,cij->o", weight, cols)
    if bias is not None:
        out += bias.double().numpy()[None, :, None, None]
    return out


def _out(size, k, stride, padding, dilation):
    return (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def _random_inputs(n, c, h, w, cout, kh, kw, stride, padding, dilation, dtype=torch.float32, seed=0,
                   far=True):
    g = torch.Generator().manual_seed(seed)
    ho, wo = _out(h, kh, stride, padding, dilation), _out(w, kw, stride, padding, dilation)
    x = torch.randn(n, c, h, w, generator=g, dtype=dtype)
    offset = (torch.rand(n, 2 * kh * kw, ho, wo, generator=g, dtype=dtype) - 0.5) * 8
    if far:
        offset[:, ::7] += 20.0  # some taps land far outside the image
    mask = torch.rand(n, kh * kw, ho, wo, generator=g, dtype=dtype)
    weight = torch.randn(cout, c, kh, kw, generator=g, dtype=dtype)
    bias = torch.randn(cout, generator=g, dtype=dtype)
    return x, offset, mask, weight, bias


@pytest.mark.parametrize(
    "h, w, kh, kw, stride, padding, dilation",
    [
        (7, 9, 3, 3, 1, 1, 1),
        (7, 9, 3, 3, 2, 1, 1),
        (7, 9, 3, 3, 1, 2, 2),
        (9, 7, 3, 3, 2, 0, 2),
        (5, 6, 1, 3, 1, 0, 1),  # non-square kernel
        (1, 6, 3, 3, 1, 1, 1),  # single-row image
    ],
)
def test_matches_per_pixel_reference(h, w, kh, kw, stride, padding, dilation):
    x, offset, mask, weight, bias = _random_inputs(2, 3, h, w, 4, kh, kw, stride, padding, dilation)
    got = deform_conv2d(x, offset, mask, weight, bias, stride=stride, padding=padding, dilation=dilation)
    want = _reference(x, offset, mask, weight, bias, stride, padding, dilation)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("stride, padding, dilation", [(1, 1, 1), (2, 1, 1), (1, 2, 2), (2, 0, 2)])
def test_zero_offsets_unit_mask_is_conv2d(stride, padding, dilation):
    x, offset, mask, weight, bias = _random_inputs(2, 3, 11, 8, 5, 3, 3, stride, padding, dilation)
    got = deform_conv2d(x, torch.zeros_like(offset), torch.ones_like(mask), weight, bias,
                        stride=stride, padding=padding, dilation=dilation)
    want = F.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("with_bias, stride, padding, dilation", [(True, 1, 1, 1), (False, 2, 2, 2)])
def test_gradcheck_through_custom_op(with_bias, stride, padding, dilation):
    x, offset, mask, weight, bias = _random_inputs(1, 2, 5, 4, 2, 3, 3, stride, padding, dilation,
                                                   dtype=torch.float64, seed=1, far=False)
    inputs = [t.requires_grad_() for t in (x, offset, mask, weight, bias if with_bias else None)
              if t is not None]

    def fn(*args):
        b = args[4] if with_bias else None
        return deform_conv2d(*args[:4], b, stride=stride, padding=padding, dilation=dilation)

    # fast_mode checks random projections of the Jacobian: same verdict, a fraction of the time
    assert torch.autograd.gradcheck(fn, tuple(inputs), fast_mode=True)


def test_shape_mistakes_raise_restore_error():
    x, offset, mask, weight, bias = _random_inputs(1, 3, 6, 6, 4, 3, 3, 1, 1, 1)
    with pytest.raises(RestoreError):
        deform_conv2d(x, offset[:, :-2], mask, weight, bias)
    with pytest.raises(RestoreError):
        deform_conv2d(x, offset, mask, weight, bias, stride=2)


@pytest.mark.parametrize("in_ch", [3, 1])
def test_module_forward_backward(in_ch):
    torch.manual_seed(0)
    m = DeformConv2d(in_ch, 8)
    x = torch.rand(1, in_ch, 37, 53, requires_grad=True)
    y = m(x)
    assert y.shape == (1, 8, 37, 53)
    # Zero-initialised predictor: regular grid with mask 0.5.
    torch.testing.assert_close(y, 0.5 * F.conv2d(x, m.weight, padding=1) + m.bias[:, None, None],
                               atol=1e-5, rtol=1e-5)
    y.square().mean().backward()
    for t in (x.grad, m.weight.grad, m.bias.grad, m.offset_mask.weight.grad):
        assert torch.isfinite(t).all() and t.abs().sum() > 0


def test_module_channels_last_float64_and_stride():
    torch.manual_seed(0)
    m = DeformConv2d(4, 6, stride=2, dilation=2, padding=2, bias=False).double()
    torch.nn.init.normal_(m.offset_mask.weight, std=0.5)
    x = torch.rand(2, 4, 15, 12, dtype=torch.float64)
    y = m(x)
    assert y.shape == (2, 6, 8, 6) and y.dtype == torch.float64
    torch.testing.assert_close(m(x.to(memory_format=torch.channels_last)), y)


def test_module_under_autocast_runs_in_float32():
    m = DeformConv2d(3, 4)
    x = torch.rand(1, 3, 9, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    assert y.dtype == torch.float32
    y.sum().backward()
    assert torch.isfinite(m.offset_mask.weight.grad).all()


@pytest.mark.gpu
def test_module_cuda_matches_cpu():
    torch.manual_seed(0)
    m = DeformConv2d(3, 4)
    torch.nn.init.normal_(m.offset_mask.weight, std=0.5)
    x = torch.rand(1, 3, 17, 19)
    torch.testing.assert_close(m.cuda()(x.cuda()).cpu(), m.cpu()(x), atol=1e-4, rtol=1e-4)


def test_flop_counter_counts_the_op():
    n, c, cout, h, w = 2, 3, 4, 8, 10
    x, offset, mask, weight, bias = _random_inputs(n, c, h, w, cout, 3, 3, 1, 1, 1)
    with FlopCounterMode(display=False) as counter:
        deform_conv2d(x, offset, mask, weight, bias)
    flops = counter.get_flop_counts()["Global"][torch.ops.restore.deform_conv2d]
    samples = n * c * 9 * h * w
    assert flops == 2 * cout * samples + 8 * samples > 0
