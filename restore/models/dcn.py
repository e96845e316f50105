"""Modulated deformable convolution (DCNv2) in pure PyTorch, as a `torch.library` op.

`restore::deform_conv2d` has the torchvision / ONNX `DeformConv` layout (one offset group,
groups=1):

* offset: N×(2·kh·kw)×Ho×Wo, the (dy, dx) pair of each kernel tap interleaved, taps in
  row-major order (tap t = i·kw + j sits in channels 2t (dy) and 2t+1 (dx));
* mask: N×(kh·kw)×Ho×Wo, multiplied onto each bilinear sample.

Output pixel (ho, wo), tap (i, j) samples the input at
``y = ho·stride − padding + i·dilation + dy``, ``x = wo·stride − padding + j·dilation + dx``
with bilinear interpolation where every corner outside the image contributes zero.

It is a custom op (rather than plain Python) so that `torch.export` keeps it as one node,
which `restore.export.onnx_ops` maps to ONNX `DeformConv` or to a GridSample decomposition,
and so that `FlopCounterMode` can count it. The kernel is the composite below (grid_sample
+ one 1×1 convolution); the backward re-runs that composite under `torch.func.vjp`, so
gradients w.r.t. every tensor input are exact.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import register_flop_formula

from restore.errors import RestoreError

__all__ = ["deform_conv2d", "DeformConv2d"]


def _sampling_grid(offset: Tensor, h: int, w: int, kh: int, kw: int,
                   stride: int, padding: int, dilation: int) -> Tensor:
    """grid_sample grid (N, K·Ho, Wo, 2) for an input of size h×w (both ≥ 2)."""
    n, _, ho, wo = offset.shape
    opts = dict(dtype=offset.dtype, device=offset.device)
    tap_y = torch.arange(kh, **opts).repeat_interleave(kw) * dilation  # (K,) row-major taps
    tap_x = torch.arange(kw, **opts).repeat(kh) * dilation
    base_y = torch.arange(ho, **opts) * stride - padding
    base_x = torch.arange(wo, **opts) * stride - padding
    off = offset.unflatten(1, (kh * kw, 2))  # N, K, (dy, dx), Ho, Wo
    py = off[:, :, 0] + tap_y[:, None, None] + base_y[:, None]
    px = off[:, :, 1] + tap_x[:, None, None] + base_x
    # align_corners=True puts -1 / +1 on the centres of the first / last pixel, so
    # pixel coordinate p maps to 2p/(size-1) - 1 exactly.
    grid = torch.stack((px * (2.0 / (w - 1)) - 1.0, py * (2.0 / (h - 1)) - 1.0), dim=-1)
    return grid.flatten(1, 2)


def _deform_conv2d_composite(x: Tensor, offset: Tensor, mask: Tensor, weight: Tensor,
                             bias: Optional[Tensor], stride: int, padding: int,
                             dilation: int) -> Tensor:
    """Differentiable reference kernel: sample every tap, then one 1×1 convolution."""
    cout, c, kh, kw = weight.shape
    ho, wo = offset.shape[-2:]
    h, w = x.shape[-2:]
    if h == 1 or w == 1:
        # The normalisation divides by size-1. An extra zero row/column is exact: samples
        # beyond the image are zero anyway.
        x = F.pad(x, (0, int(w == 1), 0, int(h == 1)))
        h, w = x.shape[-2:]
    grid = _sampling_grid(offset, h, w, kh, kw, stride, padding, dilation)
    cols = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    cols = cols.unflatten(2, (kh * kw, ho)) * mask.unsqueeze(1)  # N, C, K, Ho, Wo
    # (c, tap) channel order matches weight.flatten(1), i.e. weight[o, c, i, j].
    return F.conv2d(cols.flatten(1, 2), weight.reshape(cout, c * kh * kw, 1, 1), bias)


def _out_size(size: int, k: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def _check_args(x: Tensor, offset: Tensor, mask: Tensor, weight: Tensor,
                bias: Optional[Tensor], stride: int, padding: int, dilation: int) -> None:
    if x.dim() != 4 or weight.dim() != 4:
        raise RestoreError(f"deform_conv2d needs 4-D input and weight, got {x.dim()}-D and {weight.dim()}-D")
    if stride < 1 or dilation < 1 or padding < 0:
        raise RestoreError(f"deform_conv2d: bad stride={stride} / padding={padding} / dilation={dilation}")
    n, c, h, w = x.shape
    cout, cin, kh, kw = weight.shape
    if cin != c:
        raise RestoreError(f"deform_conv2d: weight expects {cin} input channels, input has {c}")
    ho, wo = (_out_size(h, kh, stride, padding, dilation), _out_size(w, kw, stride, padding, dilation))
    k = kh * kw
    if tuple(offset.shape) != (n, 2 * k, ho, wo) or tuple(mask.shape) != (n, k, ho, wo):
        raise RestoreError(
            f"deform_conv2d: expected offset {(n, 2 * k, ho, wo)} and mask {(n, k, ho, wo)}, "
            f"got {tuple(offset.shape)} and {tuple(mask.shape)}")
    if bias is not None and tuple(bias.shape) != (cout,):
        raise RestoreError(f"deform_conv2d: bias must have shape ({cout},), got {tuple(bias.shape)}")
    tensors = [t for t in (x, offset, mask, weight, bias) if t is not None]
    if len({t.dtype for t in tensors}) != 1:
        raise RestoreError("deform_conv2d: input, offset, mask, weight and bias must share one dtype")


@torch.library.custom_op("restore::deform_conv2d", mutates_args=())
def deform_conv2d(x: Tensor, offset: Tensor, mask: Tensor, weight: Tensor,
                  bias: Optional[Tensor] = None, *, stride: int = 1, padding: int = 1,
                  dilation: int = 1) -> Tensor:
    """Modulated deformable convolution (DCNv2), torchvision / ONNX DeformConv layout."""
    _check_args(x, offset, mask, weight, bias, stride, padding, dilation)
    return _deform_conv2d_composite(x, offset, mask, weight, bias, stride, padding, dilation)


@deform_conv2d.register_fake
def _(x, offset, mask, weight, bias=None, *, stride=1, padding=1, dilation=1):
    # The output grid is the offset grid (the predictor conv computes it with the same
    # formula); reusing its (possibly symbolic) size avoids guards under torch.export.
    return x.new_empty((x.shape[0], weight.shape[0], offset.shape[-2], offset.shape[-1]))


def _setup_context(ctx, inputs, keyword_only_inputs, output) -> None:
    ctx.save_for_backward(*inputs)
    ctx.params = dict(keyword_only_inputs)


def _backward(ctx, grad: Tensor):
    x, offset, mask, weight, bias = ctx.saved_tensors
    has_bias = bias is not None
    primals = (x, offset, mask, weight, bias) if has_bias else (x, offset, mask, weight)

    def f(*p: Tensor) -> Tensor:
        return _deform_conv2d_composite(*p[:4], p[4] if has_bias else None,
                                        ctx.params["stride"], ctx.params["padding"],
                                        ctx.params["dilation"])

    _, vjp_fn = torch.func.vjp(f, *primals)
    grads = vjp_fn(grad)
    return (*grads, None) if not has_bias else grads


deform_conv2d.register_autograd(_backward, setup_context=_setup_context)

# Under AMP the predictor conv yields half offsets while the weight stays float32; run the
# op in float32 (as autocast does for grid_sample) instead of failing the dtype check.
for _device in ("cpu", "cuda"):
    torch.library.register_autocast(deform_conv2d, _device, torch.float32)


@register_flop_formula(torch.ops.restore.deform_conv2d)
def _deform_conv2d_flops(x_shape, offset_shape, mask_shape, weight_shape, bias_shape=None,
                         *args, out_shape=None, **kwargs) -> int:
    """2 FLOPs per MAC of the (C·kh·kw → Cout) convolution, like aten.convolution, plus 8
    per sampled value: 4 multiplies + 3 adds for the bilinear blend and 1 for the mask.
    Corner weights and coordinates (shared across channels) and the bias are not counted."""
    n, c = x_shape[:2]
    cout, _, kh, kw = weight_shape
    samples = n * c * kh * kw * out_shape[-2] * out_shape[-1]
    return 2 * cout * samples + 8 * samples


class DeformConv2d(nn.Module):
    """DCNv2 "pack": a plain conv predicts the offsets and mask from the input itself.

    The predictor outputs 3·k·k channels: 2·k·k offsets (already in the interleaved
    (dy, dx) layout) followed by k·k mask logits (→ sigmoid). It starts at zero, so a fresh
    module samples the regular grid with mask 0.5, i.e. half a plain convolution.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, dilation: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.in_ch, self.out_ch, self.kernel_size = in_ch, out_ch, kernel_size
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.weight = nn.Parameter(torch.empty(out_ch, in_ch, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_ch)) if bias else None
        self.offset_mask = nn.Conv2d(in_ch, 3 * kernel_size * kernel_size, kernel_size,
                                     stride=stride, padding=padding, dilation=dilation)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same initialisation as nn.Conv2d for the main weight.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_ch * self.kernel_size ** 2)
            nn.init.uniform_(self.bias, -bound, bound)
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)

    def forward(self, x: Tensor) -> Tensor:
        k2 = self.kernel_size ** 2
        offset, logits = self.offset_mask(x).split([2 * k2, k2], dim=1)
        return deform_conv2d(x, offset, torch.sigmoid(logits), self.weight, self.bias,
                             stride=self.stride, padding=self.padding, dilation=self.dilation)

    def extra_repr(self) -> str:
        return (f"{self.in_ch}, {self.out_ch}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, bias={self.bias is not None}")
