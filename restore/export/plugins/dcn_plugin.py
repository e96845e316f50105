"""``restore::DeformConv2dRestore``: our DCNv2 as a TensorRT plugin (``tensorrt.plugin``, TRT ≥ 10.6).

Why a plugin of our own: TensorRT's built-in ``ModulatedDeformConv2d`` (what its ONNX
parser maps ``DeformConv`` to) only takes symmetric padding and a few other constraints
(see `restore.export.tensorrt.check_builtin_dcn_compat`). This plugin takes the ONNX
``DeformConv`` inputs and attributes unchanged; `prepare_graph_for_trt(model, "restore")`
renames each DeformConv node to op type ``DeformConv2dRestore`` with
``plugin_namespace="restore"``, and the ONNX parser then finds this plugin by op type +
namespace in the plugin registry.

The kernel is the project's own op (`restore.models.dcn.deform_conv2d`: grid_sample + a
1×1 convolution) run by PyTorch on TensorRT's CUDA stream, so the engine computes exactly
what the torch model does. It is a JIT (``trtp.impl``) plugin: the engine needs this
Python process (and `register_plugin()`) to run; there is no Triton / AOT kernel yet.

This module imports without TensorRT. The registration metadata below (names, inputs,
attributes, output-shape rule) is plain data that tests check without a GPU; only
`register_plugin()` touches TensorRT.
"""

# No `from __future__ import annotations`: tensorrt.plugin reads the annotations of the
# decorated functions as objects.

from dataclasses import dataclass

import numpy as np

from restore.errors import RestoreError

__all__ = [
    "ATTRIBUTES",
    "INPUTS",
    "OUTPUT_SHAPE",
    "PLUGIN_ID",
    "PLUGIN_NAME",
    "PLUGIN_NAMESPACE",
    "PLUGIN_VERSION",
    "SPEC",
    "TRT_MISSING",
    "output_shape",
    "plugin_problems",
    "reference_forward",
    "register_plugin",
]

TRT_MISSING = "TensorRT is not installed: pip install 'restore[tensorrt]' on a machine with an NVIDIA GPU"

PLUGIN_NAMESPACE = "restore"
PLUGIN_NAME = "DeformConv2dRestore"
PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{PLUGIN_NAME}"
PLUGIN_VERSION = "1"

# ONNX DeformConv input order. The plugin needs all five: the graph preparation adds a
# zero bias where the model has none (HiNAS DCN convs have no bias).
INPUTS = ("x", "weight", "offset", "bias", "mask")

# Attribute -> (kind, ONNX default). Every rewritten node carries all of them explicitly,
# because a plugin attribute has no default. None: derived from the weight's shape.
ATTRIBUTES: dict[str, tuple[str, object]] = {
    "dilations": ("ints", (1, 1)),
    "group": ("int", 1),
    "kernel_shape": ("ints", None),
    "offset_group": ("int", 1),
    "pads": ("ints", (0, 0, 0, 0)),
    "strides": ("ints", (1, 1)),
}

# Output dims as (input, axis): N of x, C_out of weight, H×W of the offset grid — the
# same rule as the torch op's fake kernel, so no stride/padding arithmetic is needed.
OUTPUT_SHAPE = (("x", 0), ("weight", 0), ("offset", 2), ("offset", 3))


@dataclass(frozen=True)
class PluginSpec:
    plugin_id: str
    namespace: str
    name: str
    version: str
    inputs: tuple[str, ...]
    attributes: tuple[str, ...]
    output_shape: tuple[tuple[str, int], ...]
    dtypes: tuple[str, ...] = ("float32", "float16")


SPEC = PluginSpec(PLUGIN_ID, PLUGIN_NAMESPACE, PLUGIN_NAME, PLUGIN_VERSION, INPUTS, tuple(ATTRIBUTES), OUTPUT_SHAPE)


def output_shape(**shapes: tuple[int, ...]) -> tuple[int, ...]:
    """The plugin's output shape from its input shapes (keyword per input name)."""
    return tuple(shapes[name][axis] for name, axis in OUTPUT_SHAPE)


def plugin_problems(attrs: dict) -> list[str]:
    """Why a DeformConv node's attributes do not fit this plugin's kernel (empty if fine).

    The kernel is `restore.models.dcn.deform_conv2d`: one stride, padding and dilation for
    both axes, symmetric padding, groups 1."""
    problems = []
    for key in ("strides", "dilations"):
        values = list(attrs.get(key, ATTRIBUTES[key][1]))
        if len(values) != 2 or values[0] != values[1] or values[0] < 1:
            problems.append(f"{key}={values} (needs two equal positive values)")
    pads = list(attrs.get("pads", ATTRIBUTES["pads"][1]))
    if len(pads) != 4 or len(set(pads)) != 1 or pads[0] < 0:
        problems.append(f"pads={pads} (needs four equal values)")
    for key in ("group", "offset_group"):
        if int(attrs.get(key, 1)) != 1:
            problems.append(f"{key}={attrs[key]} (needs 1)")
    return problems


def reference_forward(x, weight, offset, bias, mask, *, strides, pads, dilations):
    """The plugin's computation in torch (the same op the model runs)."""
    from restore.models.dcn import deform_conv2d

    return deform_conv2d(x, offset, mask, weight, bias, stride=int(strides[0]), padding=int(pads[0]),
                         dilation=int(dilations[0]))


_registered = False


def _import_plugin_api():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        raise RestoreError(TRT_MISSING) from None
    try:
        import tensorrt.plugin as trtp
    except ImportError:
        raise RestoreError(f"the restore DCN plugin needs TensorRT >= 10.6 (tensorrt.plugin); found "
                           f"{tensorrt.__version__}: use the built-in plugin or --dcn decomposed") from None
    return trtp


def register_plugin() -> None:
    """Register ``restore::DeformConv2dRestore`` with TensorRT (idempotent).

    Must run before parsing an ONNX graph prepared with ``dcn_plugin="restore"`` and
    before deserialising an engine built from one."""
    global _registered
    if _registered:
        return
    trtp = _import_plugin_api()
    _define(trtp)
    _registered = True


def _define(trtp) -> None:
    import numpy.typing as npt

    Desc = trtp.TensorDesc
    Ints = npt.NDArray[np.int32]  # the ONNX parser hands INTS attributes over as int32

    @trtp.register(PLUGIN_ID)
    def _describe(x: Desc, weight: Desc, offset: Desc, bias: Desc, mask: Desc, dilations: Ints, group: int,
                  kernel_shape: Ints, offset_group: int, pads: Ints, strides: Ints) -> Desc:
        descs = {"x": x, "weight": weight, "offset": offset, "bias": bias, "mask": mask}
        dims = tuple(descs[name].shape_expr[axis] for name, axis in OUTPUT_SHAPE)
        return trtp.from_shape_expr(dims, dtype=x.dtype)

    @trtp.autotune(PLUGIN_ID)
    def _autotune(x, weight, offset, bias, mask, outputs):
        # five inputs and the output all float32, or all float16 (linear NCHW)
        return [trtp.AutoTuneCombination(", ".join(["FP32|FP16"] * (len(INPUTS) + 1)))]

    @trtp.impl(PLUGIN_ID)
    def _run(x, weight, offset, bias, mask, dilations, pads, strides, outputs, stream) -> None:
        import torch

        with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
            args = [torch.as_tensor(t, device="cuda") for t in (x, weight, offset, bias, mask)]
            out = torch.as_tensor(outputs[0], device="cuda")
            out.copy_(reference_forward(*args, strides=strides, pads=pads, dilations=dilations))
