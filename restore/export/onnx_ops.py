"""ONNX translations of the project's custom ops for the dynamo exporter.

`restore::deform_conv2d` (see `restore.models.dcn`) has no built-in translation, so every
export of a model that contains DCN passes `custom_translation_table(mode)`::

    torch.onnx.export(model, (x,), path, dynamo=True, opset_version=19,
                      custom_translation_table=custom_translation_table("deformconv"),
                      dynamic_shapes=...)

Two modes:

* ``"deformconv"`` — one standard ONNX ``DeformConv`` node (opset ≥ 19). The op's offset
  layout is exactly DeformConv's (checked against ONNX Runtime's CPU kernel in the tests).
* ``"decomposed"`` — Slice/Range arithmetic builds the sampling grid from the offsets,
  then ``GridSample`` → ``Mul`` (mask) → ``Conv`` (1×1). Works on runtimes without
  DeformConv (opset ≥ 16; e.g. older ONNX Runtime, TensorRT parsers). Sizes come from
  ``Shape`` so batch, H and W stay dynamic.

onnxscript is imported lazily (it is an optional dependency).
"""

from __future__ import annotations

from typing import Callable

from restore.errors import RestoreError

__all__ = ["DCN_MODES", "deform_conv_translation", "custom_translation_table"]

DCN_MODES = ("deformconv", "decomposed")
_INT64_MAX = 2**63 - 1


def _static_kernel(weight) -> tuple[int, int]:
    """(kh, kw) from the exporter's symbolic weight; they become ONNX constants/attributes."""
    kh, kw = weight.shape[2], weight.shape[3]
    if not (isinstance(kh, int) and isinstance(kw, int)):
        raise RestoreError("deform_conv2d export needs a weight with a static kernel size")
    return kh, kw


def deform_conv_translation(mode: str, opset_version: int = 19) -> Callable:
    """Trace-only onnxscript function for ``torch.ops.restore.deform_conv2d.default``.

    `opset_version` must be the export's opset: it selects the GridSample mode spelling
    ('bilinear' up to opset 19, 'linear' from 20) and is checked against DeformConv's 19.
    """
    if mode not in DCN_MODES:
        raise RestoreError(f"unknown DCN export mode {mode!r}; use one of {', '.join(DCN_MODES)}")
    if mode == "deformconv" and opset_version < 19:
        raise RestoreError("ONNX DeformConv needs opset_version >= 19 (or use dcn mode 'decomposed')")
    if mode == "decomposed" and opset_version < 16:
        raise RestoreError("the decomposed DCN export needs opset_version >= 16 (GridSample)")

    from onnxscript import opset19 as op

    def restore_deform_conv2d_deformconv(x, offset, mask, weight, bias=None, stride: int = 1,
                                         padding: int = 1, dilation: int = 1):
        return op.DeformConv(
            x, weight, offset, bias, mask,
            dilations=[dilation, dilation], group=1, kernel_shape=list(_static_kernel(weight)),
            offset_group=1, pads=[padding] * 4, strides=[stride, stride])

    grid_mode = "linear" if opset_version >= 20 else "bilinear"

    def _consts(values: list[float], like, shape: list[int]):
        return op.Reshape(op.CastLike(op.Constant(value_floats=values), like), shape)

    def restore_deform_conv2d_decomposed(x, offset, mask, weight, bias=None, stride: int = 1,
                                         padding: int = 1, dilation: int = 1):
        kh, kw = _static_kernel(weight)
        k = kh * kw
        # One zero row/column at the bottom/right changes nothing (samples off the image are
        # zero) but makes the align_corners normaliser, padded size − 1 = H (W), never zero.
        xp = op.Pad(x, op.Constant(value_ints=[0, 0, 0, 0, 0, 0, 1, 1]))
        scale_y = op.Div(_consts([2.0], x, [1]), op.CastLike(op.Shape(x, start=2, end=3), x))
        scale_x = op.Div(_consts([2.0], x, [1]), op.CastLike(op.Shape(x, start=3, end=4), x))
        ho = op.Shape(offset, start=2, end=3)
        wo = op.Shape(offset, start=3, end=4)

        def base(size, shape):  # output position · stride − padding, in input pixels
            pos = op.CastLike(op.Range(0, op.Squeeze(size), 1), x)
            return op.Reshape(op.Sub(op.Mul(pos, _consts([float(stride)], x, [1])),
                                     _consts([float(padding)], x, [1])), shape)

        # Taps in row-major order, each offset channel pair is (dy, dx).
        tap_y = _consts([float(i * dilation) for i in range(kh) for _ in range(kw)], x, [k, 1, 1])
        tap_x = _consts([float(j * dilation) for _ in range(kh) for j in range(kw)], x, [k, 1, 1])
        dy = op.Slice(offset, [0], [_INT64_MAX], [1], [2])  # N, K, Ho, Wo
        dx = op.Slice(offset, [1], [_INT64_MAX], [1], [2])
        py = op.Add(op.Add(dy, tap_y), base(ho, [-1, 1]))
        px = op.Add(op.Add(dx, tap_x), base(wo, [-1]))
        one = _consts([1.0], x, [1])
        gy = op.Sub(op.Mul(py, scale_y), one)
        gx = op.Sub(op.Mul(px, scale_x), one)
        grid = op.Concat(op.Unsqueeze(gx, [4]), op.Unsqueeze(gy, [4]), axis=4)  # N,K,Ho,Wo,2
        grid = op.Reshape(grid, op.Concat(op.Constant(value_ints=[0, -1]), wo,
                                          op.Constant(value_ints=[2]), axis=0))
        cols = op.GridSample(xp, grid, align_corners=1, mode=grid_mode, padding_mode="zeros")
        # N, C, K·Ho, Wo → N, C, K, Ho, Wo; mask N, K, Ho, Wo broadcasts over C.
        cols = op.Reshape(cols, op.Concat(op.Constant(value_ints=[0, 0, k, -1]), wo, axis=0))
        cols = op.Mul(cols, op.Unsqueeze(mask, [1]))
        cols = op.Reshape(cols, op.Concat(op.Constant(value_ints=[0, -1]), ho, wo, axis=0))
        # (c, tap) channel order of cols matches weight[o, c, i, j] flattened.
        return op.Conv(cols, op.Reshape(weight, [0, -1, 1, 1]), bias)

    if mode == "deformconv":
        return restore_deform_conv2d_deformconv
    return restore_deform_conv2d_decomposed


def custom_translation_table(dcn_mode: str, opset_version: int = 19) -> dict:
    """``custom_translation_table`` for ``torch.onnx.export(..., dynamo=True)``."""
    import torch

    import restore.models.dcn  # noqa: F401  (registers torch.ops.restore.deform_conv2d)

    return {torch.ops.restore.deform_conv2d.default: deform_conv_translation(dcn_mode, opset_version)}
