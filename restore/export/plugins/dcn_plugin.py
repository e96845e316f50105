"""``restore::DeformConv2dRestore``: our DCNv2 as a TensorRT plugin (``tensorrt.plugin``, TRT ≥ 10.6).

Why a plugin of our own: TensorRT builds without the built-in ``ModulatedDeformConv2d``
plugin (what its ONNX parser maps ``DeformConv`` to) cannot run DCN graphs, and the
built-in one takes symmetric padding only (see
`restore.export.tensorrt.check_builtin_dcn_compat`). This plugin takes the ONNX
``DeformConv`` inputs and attributes unchanged (any padding, per-axis stride and
dilation, groups, offset groups); `prepare_graph_for_trt(model, "restore")` renames each
DeformConv node to op type ``DeformConv2dRestore`` with ``plugin_namespace="restore"``,
and the ONNX parser then finds this plugin by op type + namespace in the plugin registry.

The kernel is a Triton kernel (`restore.export.plugins.dcn_triton`), launched by the
``trtp.impl`` function on TensorRT's CUDA stream into TensorRT's output buffer. It is a
JIT plugin: the engine needs this Python process (and `register_plugin()`, which
`restore.export.tensorrt` calls) to run.

This module imports without TensorRT or Triton. The registration metadata below (names,
inputs, attributes, output-shape rule) is plain data that tests check without a GPU; only
`register_plugin()` touches TensorRT (and checks that Triton is installed).
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
    "plugin_forward",
    "plugin_problems",
    "register_plugin",
    "require_plugin_deps",
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


def plugin_problems(attrs: dict, weight_dims=None) -> list[str]:
    """Why a DeformConv node's attributes do not fit this plugin's kernel (empty if fine).

    The Triton kernel takes every 2-D DeformConv: positive strides and dilations per axis,
    any non-negative (also asymmetric) pads, any group / offset_group dividing the
    channels. `weight_dims` (C_out, C/group, kh, kw), when known, checks the groups."""
    problems = []
    kernel = list(attrs.get("kernel_shape", weight_dims[2:] if weight_dims else (1, 1)))
    if len(kernel) != 2 or min(kernel) < 1:
        problems.append(f"kernel_shape={kernel} (needs a 2-D kernel)")
    for key in ("strides", "dilations"):
        values = list(attrs.get(key, ATTRIBUTES[key][1]))
        if len(values) != 2 or min(values) < 1:
            problems.append(f"{key}={values} (needs two positive values)")
    pads = list(attrs.get("pads", ATTRIBUTES["pads"][1]))
    if len(pads) != 4 or min(pads) < 0:
        problems.append(f"pads={pads} (needs four values >= 0)")
    groups = {key: int(attrs.get(key, 1)) for key in ("group", "offset_group")}
    for key, value in groups.items():
        if value < 1:
            problems.append(f"{key}={value} (needs >= 1)")
    if weight_dims is not None and len(weight_dims) == 4 and groups["group"] >= 1:
        if weight_dims[0] % groups["group"]:
            problems.append(f"group={groups['group']} does not divide the {weight_dims[0]} output channels")
        if groups["offset_group"] >= 1 and (weight_dims[1] * groups["group"]) % groups["offset_group"]:
            problems.append(f"offset_group={groups['offset_group']} does not divide the "
                            f"{weight_dims[1] * groups['group']} input channels")
    return problems


def plugin_forward(x, weight, offset, bias, mask, *, dilations, group, offset_group, pads, strides, out=None):
    """What the plugin computes, on torch tensors: the Triton kernel with the node's
    attributes (as TensorRT hands them over: int32 arrays and ints)."""
    from restore.export.plugins.dcn_triton import deform_conv2d_triton

    return deform_conv2d_triton(x, weight, offset, bias, mask, strides=[int(v) for v in strides],
                                pads=[int(v) for v in pads], dilations=[int(v) for v in dilations],
                                group=int(group), offset_group=int(offset_group), out=out)


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
                           f"{tensorrt.__version__}: use --dcn-plugin builtin or --dcn decomposed") from None
    return trtp


def require_plugin_deps():
    """`tensorrt.plugin` (TensorRT ≥ 10.6) and Triton, or a one-line `RestoreError`
    naming what to install. Returns the ``tensorrt.plugin`` module."""
    from restore.export.plugins.dcn_triton import require_triton

    trtp = _import_plugin_api()
    require_triton()
    return trtp


def register_plugin() -> None:
    """Register ``restore::DeformConv2dRestore`` with TensorRT (idempotent).

    Must run before parsing an ONNX graph prepared with ``dcn_plugin="restore"`` and
    before deserialising an engine built from one."""
    global _registered
    if _registered:
        return
    trtp = require_plugin_deps()
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

    # Only the attributes the kernel needs are listed (they are serialised into the engine);
    # the kernel size comes from the weight's shape.
    @trtp.impl(PLUGIN_ID)
    def _run(x, weight, offset, bias, mask, dilations, group, offset_group, pads, strides, outputs, stream) -> None:
        import torch

        with torch.cuda.stream(torch.cuda.ExternalStream(stream)):  # Triton launches on torch's current stream
            args = [torch.as_tensor(t, device="cuda") for t in (x, weight, offset, bias, mask)]
            plugin_forward(*args, dilations=dilations, group=group, offset_group=offset_group, pads=pads,
                           strides=strides, out=torch.as_tensor(outputs[0], device="cuda"))
