"""DCNv2 forward (ONNX ``DeformConv``) as a Triton kernel, and its launcher.

This is the kernel of the ``restore::DeformConv2dRestore`` TensorRT plugin
(`restore.export.plugins.dcn_plugin`). It computes exactly ONNX ``DeformConv`` /
torchvision ``deform_conv2d`` / the project's `restore.models.dcn.deform_conv2d`:

* x: N×C×H×W; weight: C_out×(C/group)×kh×kw; bias: C_out (optional);
* offset: N×(offset_group·2·kh·kw)×Ho×Wo — per offset group, the (dy, dx) pair of each
  tap interleaved, taps in row-major order (group ``og``, tap ``t = i·kw + j``: channels
  ``og·2K + 2t`` (dy) and ``og·2K + 2t + 1`` (dx), K = kh·kw);
* mask: N×(offset_group·kh·kw)×Ho×Wo (optional, default 1), multiplied onto each sample.

Output pixel (ho, wo), tap (i, j) of input channel c (offset group ``c // (C/offset_group)``)
samples x at ``y = ho·stride_h − pad_top + i·dil_h + dy``, ``x = wo·stride_w − pad_left +
j·dil_w + dx`` bilinearly, every corner outside the image contributing zero. Output channel
o of conv group g sums, over the group's input channels and the taps, weight × mask ×
sample, plus the bias. ONNX pads are ``[top, left, bottom, right]``: the sampling uses the
begin pads; the end pads only size the output (Ho×Wo, which the offset grid must match).

One program computes a BLOCK_P (output pixels, flattened over N·Ho·Wo) × BLOCK_CO (output
channels of one group) tile: for each tap and offset group it loads the offsets and mask
once, derives the four corner indices and weights, then for each input channel gathers the
four corners and accumulates ``sample ⊗ weight-row`` in float32 (fp16 in, fp16 out).
Indices are 64-bit, so large batches of large tiles do not overflow.

Importable without Triton (the launcher then raises a one-line `RestoreError`); on CPU the
kernel runs in Triton's interpreter (``TRITON_INTERPRET=1`` set before importing triton),
which is how the tests check it against the PyTorch op.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from restore.errors import RestoreError

__all__ = ["TRITON_MISSING", "deform_conv2d_triton", "dcn_output_size", "require_triton"]

TRITON_MISSING = ("Triton is not installed (the restore DCN plugin's kernel needs it): pip install triton, "
                  "or pass --dcn-plugin builtin")

try:  # pragma: no branch - which branch runs depends on the environment
    import triton
    import triton.language as tl
except ImportError:  # the launcher explains what to install
    triton = tl = None


def require_triton():
    """The `triton` module, or a one-line `RestoreError` saying what to install."""
    if triton is None:
        raise RestoreError(TRITON_MISSING)
    return triton


if triton is not None:

    @triton.jit
    def _dcn_forward_kernel(
        x_ptr, w_ptr, offset_ptr, mask_ptr, bias_ptr, out_ptr,
        C, H, W, COUT, HO, WO, NUM_PIX,
        stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
        C_PER_GROUP, COUT_PER_GROUP, C_PER_OFFSET_GROUP, OFFSET_GROUPS,
        KH: tl.constexpr, KW: tl.constexpr, HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr,
        BLOCK_P: tl.constexpr, BLOCK_CO: tl.constexpr,
    ):
        pid_p = tl.program_id(0)
        pid_co = tl.program_id(1)
        g = tl.program_id(2)  # conv group

        # output pixels of this tile, flattened over (n, ho, wo); int64 for large batches
        p = pid_p.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
        p_ok = p < NUM_PIX
        hw_out = HO * WO
        pix = p % hw_out  # ho·Wo + wo
        n = p // hw_out
        ho = pix // WO
        wo = pix % WO

        # output channels of this tile (within group g)
        co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
        co_ok = co < COUT_PER_GROUP
        co_abs = g * COUT_PER_GROUP + co

        K = KH * KW
        plane = H * W
        base_y = (ho * stride_h - pad_h).to(tl.float32)
        base_x = (wo * stride_w - pad_w).to(tl.float32)
        c_lo = g * C_PER_GROUP
        c_hi = c_lo + C_PER_GROUP
        og_lo = c_lo // C_PER_OFFSET_GROUP
        og_hi = (c_hi - 1) // C_PER_OFFSET_GROUP + 1

        acc = tl.full((BLOCK_P, BLOCK_CO), 0.0, dtype=tl.float32)
        for og in range(og_lo, og_hi):
            # input channels of conv group g that offset group og deforms
            c_start = tl.maximum(c_lo, og * C_PER_OFFSET_GROUP)
            c_end = tl.minimum(c_hi, (og + 1) * C_PER_OFFSET_GROUP)
            for tap in range(K):
                i = tap // KW
                j = tap % KW
                off_at = ((n * OFFSET_GROUPS + og) * (2 * K) + 2 * tap) * hw_out + pix
                dy = tl.load(offset_ptr + off_at, mask=p_ok, other=0.0).to(tl.float32)
                dx = tl.load(offset_ptr + off_at + hw_out, mask=p_ok, other=0.0).to(tl.float32)
                # Samples further than one pixel outside are zero whatever their fraction;
                # clamping first keeps the float→int conversion defined for huge offsets.
                y = tl.minimum(tl.maximum(base_y + (i * dil_h).to(tl.float32) + dy, -2.0), H * 1.0)
                x = tl.minimum(tl.maximum(base_x + (j * dil_w).to(tl.float32) + dx, -2.0), W * 1.0)
                y0f = tl.floor(y)
                x0f = tl.floor(x)
                ly = y - y0f
                lx = x - x0f
                y0 = y0f.to(tl.int32)
                x0 = x0f.to(tl.int32)
                y1 = y0 + 1
                x1 = x0 + 1
                in_y0 = (y0 >= 0) & (y0 < H)
                in_y1 = (y1 >= 0) & (y1 < H)
                in_x0 = (x0 >= 0) & (x0 < W)
                in_x1 = (x1 >= 0) & (x1 < W)
                ok00 = p_ok & in_y0 & in_x0
                ok01 = p_ok & in_y0 & in_x1
                ok10 = p_ok & in_y1 & in_x0
                ok11 = p_ok & in_y1 & in_x1
                if HAS_MASK:
                    m_at = ((n * OFFSET_GROUPS + og) * K + tap) * hw_out + pix
                    m = tl.load(mask_ptr + m_at, mask=p_ok, other=0.0).to(tl.float32)
                else:
                    m = tl.where(p_ok, 1.0, 0.0)
                w00 = (1.0 - ly) * (1.0 - lx) * m
                w01 = (1.0 - ly) * lx * m
                w10 = ly * (1.0 - lx) * m
                w11 = ly * lx * m
                i00 = y0.to(tl.int64) * W + x0
                i01 = i00 + 1
                i10 = i00 + W
                i11 = i10 + 1
                for c in range(c_start, c_end):
                    chan = (n * C + c) * plane
                    v = w00 * tl.load(x_ptr + chan + i00, mask=ok00, other=0.0).to(tl.float32)
                    v += w01 * tl.load(x_ptr + chan + i01, mask=ok01, other=0.0).to(tl.float32)
                    v += w10 * tl.load(x_ptr + chan + i10, mask=ok10, other=0.0).to(tl.float32)
                    v += w11 * tl.load(x_ptr + chan + i11, mask=ok11, other=0.0).to(tl.float32)
                    # weight[o, c - c_lo, i, j] for this tile's output channels
                    w_at = (co_abs.to(tl.int64) * C_PER_GROUP + (c - c_lo)) * K + tap
                    wv = tl.load(w_ptr + w_at, mask=co_ok, other=0.0).to(tl.float32)
                    acc += v[:, None] * wv[None, :]

        if HAS_BIAS:
            acc += tl.load(bias_ptr + co_abs, mask=co_ok, other=0.0).to(tl.float32)[None, :]
        out_at = (n[:, None] * COUT + co_abs[None, :]) * hw_out + pix[:, None]
        tl.store(out_ptr + out_at, acc.to(out_ptr.dtype.element_ty), mask=p_ok[:, None] & co_ok[None, :])


def dcn_output_size(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int, dilation: int) -> int:
    """ONNX DeformConv / Conv output length along one axis."""
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1


def _pair(values: Sequence[int], name: str, minimum: int) -> tuple[int, int]:
    values = tuple(int(v) for v in values)
    if len(values) != 2 or min(values) < minimum:
        raise RestoreError(f"deform_conv2d_triton: {name} must be two integers >= {minimum}, got {list(values)}")
    return values


def _check(x, weight, offset, bias, mask, strides, pads, dilations, group, offset_group):
    if x.dim() != 4 or weight.dim() != 4:
        raise RestoreError(f"deform_conv2d_triton needs 4-D input and weight, got {x.dim()}-D and {weight.dim()}-D")
    sh, sw = _pair(strides, "strides", 1)
    dh, dw = _pair(dilations, "dilations", 1)
    pads = tuple(int(v) for v in pads)
    if len(pads) != 4 or min(pads) < 0:
        raise RestoreError(f"deform_conv2d_triton: pads must be four integers >= 0 "
                           f"[top, left, bottom, right], got {list(pads)}")
    group, offset_group = int(group), int(offset_group)
    n, c, h, w = x.shape
    cout, c_per_group, kh, kw = weight.shape
    if group < 1 or offset_group < 1 or c % group or cout % group or c % offset_group:
        raise RestoreError(f"deform_conv2d_triton: group={group} and offset_group={offset_group} must be positive "
                           f"and divide the {c} input channels (group also the {cout} output channels)")
    if c_per_group != c // group:
        raise RestoreError(f"deform_conv2d_triton: weight expects {c_per_group} input channels per group, "
                           f"input has {c} in {group} group(s)")
    ho = dcn_output_size(h, kh, sh, pads[0], pads[2], dh)
    wo = dcn_output_size(w, kw, sw, pads[1], pads[3], dw)
    k = kh * kw
    if ho < 1 or wo < 1:
        raise RestoreError(f"deform_conv2d_triton: input {h}×{w} is too small for this kernel/padding")
    if tuple(offset.shape) != (n, offset_group * 2 * k, ho, wo):
        raise RestoreError(f"deform_conv2d_triton: expected offset {(n, offset_group * 2 * k, ho, wo)}, "
                           f"got {tuple(offset.shape)}")
    if mask is not None and tuple(mask.shape) != (n, offset_group * k, ho, wo):
        raise RestoreError(f"deform_conv2d_triton: expected mask {(n, offset_group * k, ho, wo)}, "
                           f"got {tuple(mask.shape)}")
    if bias is not None and tuple(bias.shape) != (cout,):
        raise RestoreError(f"deform_conv2d_triton: bias must have shape ({cout},), got {tuple(bias.shape)}")
    tensors = [t for t in (x, weight, offset, bias, mask) if t is not None]
    if len({t.dtype for t in tensors}) != 1 or x.dtype not in (torch.float32, torch.float16):
        raise RestoreError("deform_conv2d_triton: all tensors must share one dtype, float32 or float16")
    if len({t.device for t in tensors}) != 1:
        raise RestoreError("deform_conv2d_triton: all tensors must be on one device")
    return (sh, sw), pads, (dh, dw), group, offset_group, (n, cout, ho, wo)


def _next_pow2(v: int) -> int:
    return 1 << max(0, int(v) - 1).bit_length()


def deform_conv2d_triton(x: torch.Tensor, weight: torch.Tensor, offset: torch.Tensor,
                         bias: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None, *,
                         strides: Sequence[int] = (1, 1), pads: Sequence[int] = (0, 0, 0, 0),
                         dilations: Sequence[int] = (1, 1), group: int = 1, offset_group: int = 1,
                         out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """ONNX ``DeformConv`` (inputs in its order: X, W, offset, B, mask) with the Triton kernel.

    `out` (N×C_out×Ho×Wo, contiguous, the inputs' dtype) is written in place when given —
    the TensorRT plugin passes its output buffer — and returned. Runs on the current
    CUDA stream (or in Triton's interpreter on CPU tensors)."""
    require_triton()
    (sh, sw), pads, (dh, dw), group, offset_group, out_shape = _check(
        x, weight, offset, bias, mask, strides, pads, dilations, group, offset_group)
    if out is None:
        out = torch.empty(out_shape, dtype=x.dtype, device=x.device)
    elif tuple(out.shape) != out_shape or out.dtype != x.dtype or not out.is_contiguous():
        raise RestoreError(f"deform_conv2d_triton: out must be a contiguous {x.dtype} tensor of shape {out_shape}, "
                           f"got {out.dtype} {tuple(out.shape)}")
    n, cout, ho, wo = out_shape
    num_pix = n * ho * wo
    if num_pix == 0 or cout == 0:
        return out
    c, h, w = x.shape[1:]
    _, _, kh, kw = weight.shape
    x, weight, offset = x.contiguous(), weight.contiguous(), offset.contiguous()
    mask = mask.contiguous() if mask is not None else None
    bias = bias.contiguous() if bias is not None else None
    cout_per_group = cout // group
    block_co = min(_next_pow2(cout_per_group), 32)
    block_p = 128 if block_co <= 16 else 64
    grid = (triton.cdiv(num_pix, block_p), triton.cdiv(cout_per_group, block_co), group)
    _dcn_forward_kernel[grid](
        x, weight, offset, mask if mask is not None else offset, bias if bias is not None else weight, out,
        c, h, w, cout, ho, wo, num_pix,
        sh, sw, pads[0], pads[1], dh, dw,
        c // group, cout_per_group, c // offset_group, offset_group,
        KH=kh, KW=kw, HAS_MASK=mask is not None, HAS_BIAS=bias is not None,
        BLOCK_P=block_p, BLOCK_CO=block_co, num_warps=4,
    )
    return out
