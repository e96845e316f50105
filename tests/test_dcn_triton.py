"""The Triton DCNv2 kernel of the restore TensorRT plugin, run on CPU by Triton's interpreter.

Checked against the project's PyTorch op (`restore.models.dcn.deform_conv2d`) on what that
op supports, and against ONNX Runtime's ``DeformConv`` for what only the plugin takes
(groups, offset groups, asymmetric pads, per-axis stride/dilation, no mask). Tensors are
tiny: the interpreter runs each program in numpy.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

from restore.errors import RestoreError  # noqa: E402
from restore.export.plugins import dcn_plugin, dcn_triton  # noqa: E402
from restore.models.dcn import deform_conv2d  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def interpreted_kernel():
    """Run the kernel in Triton's CPU interpreter for this module only.

    Triton decides at ``@triton.jit`` time whether a kernel is interpreted, and triton is
    usually imported long before this module (importing the project's DCN op imports it
    via torch). So TRITON_INTERPRET=1 is set here, for this module's tests, and the
    kernel's Python function is wrapped in the interpreter. Setting it at import time
    instead would leak into the whole pytest process and make later ``@triton.jit``
    kernels (the plugin's compiled kernel in the GPU tests) run interpreted."""
    from triton.runtime.interpreter import InterpretedFunction

    kernel = dcn_triton._dcn_forward_kernel
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITON_INTERPRET", "1")
        if not isinstance(kernel, InterpretedFunction):
            mp.setattr(dcn_triton, "_dcn_forward_kernel", InterpretedFunction(kernel.fn))
        yield


def _inputs(n, c, h, w, cout, kh, kw, ho, wo, *, group=1, offset_group=1, seed=0, mask=True, bias=True):
    g = torch.Generator().manual_seed(seed)
    k = kh * kw
    x = torch.randn(n, c, h, w, generator=g)
    offset = (torch.rand(n, offset_group * 2 * k, ho, wo, generator=g) - 0.5) * 8  # fractional, ±4 px
    offset[:, ::7] += 20.0  # some taps land far outside the image
    offset[:, 1::5] -= 1e6  # and some absurdly far (the float→int conversion must stay defined)
    m = torch.rand(n, offset_group * k, ho, wo, generator=g) if mask else None
    weight = torch.randn(cout, c // group, kh, kw, generator=g)
    b = torch.randn(cout, generator=g) if bias else None
    return x, weight, offset, b, m


@pytest.mark.parametrize(
    "n, c, h, w, cout, kh, kw, stride, padding, dilation, bias",
    [
        (1, 1, 7, 9, 2, 3, 3, 1, 1, 1, True),  # gray, stride 1
        (2, 3, 9, 7, 4, 3, 3, 2, 1, 1, True),  # colour, stride 2, batch 2
        (1, 3, 7, 9, 3, 3, 3, 1, 2, 2, False),  # dilation 2, no bias
        (1, 1, 9, 7, 2, 3, 3, 2, 0, 2, True),  # stride 2 + dilation 2, no padding
        (1, 3, 5, 6, 2, 1, 3, 1, 0, 1, True),  # non-square kernel
    ],
)
def test_matches_the_project_op(n, c, h, w, cout, kh, kw, stride, padding, dilation, bias):
    ho = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    wo = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    x, weight, offset, b, mask = _inputs(n, c, h, w, cout, kh, kw, ho, wo, bias=bias)
    want = deform_conv2d(x, offset, mask, weight, b, stride=stride, padding=padding, dilation=dilation)
    got = dcn_triton.deform_conv2d_triton(x, weight, offset, b, mask, strides=(stride, stride),
                                          pads=(padding,) * 4, dilations=(dilation, dilation))
    assert got.shape == want.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


def test_plugin_forward_with_tensorrt_attributes_writes_the_output_buffer():
    """What the plugin's trtp.impl does: int32 attribute arrays, TensorRT's output buffer."""
    x, weight, offset, b, mask = _inputs(1, 3, 8, 8, 4, 3, 3, 8, 8, seed=1)
    out = torch.full((1, 4, 8, 8), float("nan"))
    i32 = lambda *v: np.array(v, np.int32)  # noqa: E731
    got = dcn_plugin.plugin_forward(x, weight, offset, b, mask, dilations=i32(1, 1), group=1, offset_group=1,
                                    pads=i32(1, 1, 1, 1), strides=i32(1, 1), out=out)
    assert got is out
    want = deform_conv2d(x, offset, mask, weight, b, stride=1, padding=1, dilation=1)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-4)


def test_float16():
    x, weight, offset, b, mask = _inputs(1, 3, 7, 9, 2, 3, 3, 7, 9, seed=2)
    x, offset = x.clamp(-2, 2), offset.clamp(-30, 30)  # within float16's range
    half = [t.half() for t in (x, weight, offset, b, mask)]
    got = dcn_triton.deform_conv2d_triton(*half, pads=(1, 1, 1, 1))
    want = deform_conv2d(*[t.float() for t in (half[0], half[2], half[4], half[1], half[3])], stride=1, padding=1,
                         dilation=1)
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.float(), want, rtol=0, atol=2e-2)


@pytest.mark.parametrize(
    "c, cout, kh, kw, strides, pads, dilations, group, offset_group, mask, bias",
    [
        (4, 6, 3, 3, (1, 2), (1, 0, 2, 1), (2, 1), 2, 2, True, True),  # groups, asymmetric pads, per-axis
        (6, 4, 3, 2, (2, 1), (0, 1, 1, 0), (1, 2), 2, 3, False, True),  # offset groups across conv groups
        (4, 4, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, 4, True, False),  # one offset group per channel
    ],
)
def test_matches_onnx_deformconv_beyond_the_project_op(c, cout, kh, kw, strides, pads, dilations, group,
                                                       offset_group, mask, bias):
    ort = pytest.importorskip("onnxruntime", minversion="1.25")  # DeformConv's CPU kernel
    from onnx import TensorProto, helper

    n, h, w = 2, 6, 7
    ho = dcn_triton.dcn_output_size(h, kh, strides[0], pads[0], pads[2], dilations[0])
    wo = dcn_triton.dcn_output_size(w, kw, strides[1], pads[1], pads[3], dilations[1])
    tensors = _inputs(n, c, h, w, cout, kh, kw, ho, wo, group=group, offset_group=offset_group, seed=3,
                      mask=mask, bias=bias)
    got = dcn_triton.deform_conv2d_triton(*tensors, strides=strides, pads=pads, dilations=dilations, group=group,
                                          offset_group=offset_group)

    names = [name if t is not None else "" for name, t in zip(("x", "w", "offset", "b", "mask"), tensors)]
    node = helper.make_node("DeformConv", names, ["y"], kernel_shape=[kh, kw], strides=list(strides),
                            pads=list(pads), dilations=list(dilations), group=group, offset_group=offset_group)
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(t.shape))
              for name, t in zip(names, tensors) if t is not None]
    graph = helper.make_graph([node], "dcn", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, {name: t.numpy() for name, t in zip(names, tensors) if t is not None})[0]
    assert tuple(got.shape) == want.shape == (n, cout, ho, wo)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-4)


def test_bad_arguments_are_explained():
    x, weight, offset, b, mask = _inputs(1, 4, 6, 6, 4, 3, 3, 6, 6)
    with pytest.raises(RestoreError, match=r"expected offset \(1, 18, 4, 4\)"):
        dcn_triton.deform_conv2d_triton(x, weight, offset, b, mask)  # pads 0: a 4×4 output
    with pytest.raises(RestoreError, match="divide"):
        dcn_triton.deform_conv2d_triton(x, weight[:, :2], offset, b, mask, pads=(1,) * 4, group=3)
    with pytest.raises(RestoreError, match="strides"):
        dcn_triton.deform_conv2d_triton(x, weight, offset, b, mask, pads=(1,) * 4, strides=(0, 1))
    with pytest.raises(RestoreError, match="one dtype"):
        dcn_triton.deform_conv2d_triton(x, weight.double(), offset, b, mask, pads=(1,) * 4)
    with pytest.raises(RestoreError, match="out must be"):
        dcn_triton.deform_conv2d_triton(x, weight, offset, b, mask, pads=(1,) * 4, out=torch.empty(1, 4, 5, 6))


def test_clear_message_without_triton(monkeypatch):
    monkeypatch.setattr(dcn_triton, "triton", None)
    x, weight, offset, b, mask = _inputs(1, 1, 4, 4, 1, 3, 3, 4, 4)
    with pytest.raises(RestoreError) as info:
        dcn_triton.deform_conv2d_triton(x, weight, offset, b, mask, pads=(1,) * 4)
    assert str(info.value) == dcn_triton.TRITON_MISSING
    assert "pip install triton" in dcn_triton.TRITON_MISSING and "\n" not in dcn_triton.TRITON_MISSING
