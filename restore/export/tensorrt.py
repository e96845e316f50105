"""TensorRT: graph preparation, engine building and the `TensorRTBackend`.

Importable without TensorRT: everything that only looks at or rewrites ONNX graphs
(`unsupported_ops`, `check_builtin_dcn_compat`, `prepare_graph_for_trt`) and the
optimisation-profile arithmetic (`profile_hw`, `profile_shapes`) is pure Python; the
functions that need TensorRT raise a one-line `RestoreError` when it is missing.

DCN has three routes into an engine:

* ``--dcn decomposed`` export: GridSample → Mul → Conv, all native TensorRT layers.
* ``DeformConv`` + ``dcn_plugin="builtin"``: the ONNX parser maps DeformConv to TensorRT's
  ``ModulatedDeformConv2d`` plugin (``init_libnvinfer_plugins`` registers it). That plugin
  needs symmetric padding, groups 1, 2-D convolutions — `check_builtin_dcn_compat`
  validates each node first and says what fails.
* ``DeformConv`` + ``dcn_plugin="restore"``: nodes are renamed to our own plugin
  (`restore.export.plugins.dcn_plugin`), whose kernel is written in Triton
  (`restore.export.plugins.dcn_triton`); it takes any 2-D DeformConv (asymmetric pads,
  groups, offset groups) and needs TensorRT ≥ 10.6 and Triton.

Tiles vary in shape (the runtime shrinks the last tiles to small images), so engines get
one optimisation profile: min = one size multiple, opt = the tile, max = ``max_side``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from restore.atomic import atomic_write
from restore.errors import RestoreError
from restore.export.plugins.dcn_plugin import (
    ATTRIBUTES,
    PLUGIN_NAME,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
    TRT_MISSING,
    plugin_problems,
    register_plugin,
    require_plugin_deps,
)

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from restore.zoo.registry import ModelEntry

__all__ = [
    "DCN_PLUGINS",
    "TRT_ONNX_OPS",
    "ProfileShapes",
    "TensorRTBackend",
    "build_engine",
    "builtin_dcn_problems",
    "check_builtin_dcn_compat",
    "check_dcn_plugin",
    "has_deformconv",
    "prepare_graph_for_trt",
    "profile_hw",
    "profile_shapes",
    "require_tensorrt",
    "require_trt_build",
    "unsupported_ops",
]

DCN_PLUGINS = ("builtin", "restore")
DEFAULT_BATCH = (1, 16, 32)  # min / opt / max tiles per call; 16 is the runtime's default batch

# ONNX ops (default domain) that TensorRT's ONNX parser imports; the subset relevant to
# image-to-image conv nets, checked against the parser's operator support list.
TRT_ONNX_OPS = frozenset("""
    Abs Add And ArgMax ArgMin AveragePool BatchNormalization Cast Ceil Clip Concat Constant
    ConstantOfShape Conv ConvTranspose Cos DeformConv DepthToSpace Div Einsum Elu Equal Erf Exp
    Expand Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalMaxPool
    Greater GreaterOrEqual GridSample GroupNormalization HardSigmoid HardSwish Identity If
    InstanceNormalization LayerNormalization LeakyRelu Less LessOrEqual Log MatMul Max MaxPool
    Mean Min Mish Mod Mul Neg Not Or Pad Pow PRelu Range Reciprocal ReduceL2 ReduceMax ReduceMean
    ReduceMin ReduceProd ReduceSum Relu Reshape Resize ScatterElements ScatterND Selu Shape
    Sigmoid Sign Sin Size Slice Softmax Softplus SpaceToDepth Split Sqrt Squeeze Sub Sum Tanh
    Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

_DEFAULT_DOMAINS = ("", "ai.onnx")


def require_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise RestoreError(TRT_MISSING) from None
    return tensorrt


def check_dcn_plugin(dcn_plugin: str) -> str:
    if dcn_plugin not in DCN_PLUGINS:
        raise RestoreError(f"unknown DCN plugin {dcn_plugin!r}; use one of {', '.join(DCN_PLUGINS)}")
    return dcn_plugin


def require_trt_build(dcn_plugin: str = "builtin"):
    """Everything an engine build with `dcn_plugin` needs from the environment — TensorRT,
    and for the restore plugin ``tensorrt.plugin`` (TRT ≥ 10.6) and Triton — or a one-line
    `RestoreError` naming what to install. Returns the tensorrt module."""
    check_dcn_plugin(dcn_plugin)
    trt = require_tensorrt()
    if dcn_plugin == "restore":
        require_plugin_deps()
    return trt


def _require_cuda(device: str) -> str:
    if not torch.cuda.is_available():
        raise RestoreError("TensorRT needs an NVIDIA GPU with CUDA, and none is available (try --backend onnx)")
    device = "cuda" if device in ("auto", "cuda") else device
    if not device.startswith("cuda"):
        raise RestoreError(f"the TensorRT backend runs on CUDA devices only, not {device!r}")
    return device


# ----------------------------------------------------------------------------- profiles


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def profile_hw(tile: int, size_multiple: int = 1, max_side: int = 1024):
    """(min_hw, opt_hw, max_hw) for tiles of side `tile` on a net needing multiples of
    `size_multiple`: the runtime may shrink tiles down to one multiple, and whole-image
    runs may go up to `max_side` (rounded up to a multiple, never below the tile)."""
    if tile < 1 or size_multiple < 1 or max_side < 1:
        raise RestoreError(f"tile, size multiple and max side must be positive (got {tile}, {size_multiple}, {max_side})")
    opt = _round_up(tile, size_multiple)
    top = max(opt, _round_up(max_side, size_multiple))
    return (size_multiple, size_multiple), (opt, opt), (top, top)


@dataclass(frozen=True)
class ProfileShapes:
    min: tuple[int, int, int, int]
    opt: tuple[int, int, int, int]
    max: tuple[int, int, int, int]

    def contains(self, shape) -> bool:
        return all(lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max))


def profile_shapes(in_channels: int, min_hw, opt_hw, max_hw, batch=DEFAULT_BATCH) -> ProfileShapes:
    """NCHW min/opt/max shapes of the engine's single input; checks their order."""
    shapes = ProfileShapes(*[(int(b), int(in_channels), int(hw[0]), int(hw[1]))
                             for b, hw in zip(batch, (min_hw, opt_hw, max_hw))])
    if not all(a <= b <= c for a, b, c in zip(shapes.min, shapes.opt, shapes.max)) or min(shapes.min) < 1:
        raise RestoreError(f"optimisation profile needs 1 <= min <= opt <= max per dimension, got "
                           f"min {shapes.min}, opt {shapes.opt}, max {shapes.max}")
    return shapes


# ----------------------------------------------------------------------------- graph checks


def unsupported_ops(onnx_model: "onnx.ModelProto") -> list[str]:
    """Op types TensorRT's ONNX parser would not import (custom-domain ops other than our
    plugin included), sorted; empty when the graph is fine."""
    bad = set()
    for node in onnx_model.graph.node:
        if node.domain in _DEFAULT_DOMAINS:
            if node.op_type not in TRT_ONNX_OPS:
                bad.add(node.op_type)
        elif not (node.op_type == PLUGIN_NAME and node.domain == PLUGIN_NAMESPACE):
            bad.add(f"{node.domain}::{node.op_type}")
    return sorted(bad)


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def has_deformconv(onnx_model: "onnx.ModelProto | str | Path") -> bool:
    """Whether a graph (or ONNX file) has DeformConv nodes, i.e. needs a DCN plugin."""
    if isinstance(onnx_model, (str, Path)):
        import onnx

        path = Path(onnx_model)
        if not path.is_file():
            raise RestoreError(f"ONNX file {path} does not exist")
        onnx_model = onnx.load(str(path), load_external_data=False)
    return any(n.op_type == "DeformConv" for n in onnx_model.graph.node)


def builtin_dcn_problems(onnx_model: "onnx.ModelProto") -> list[str]:
    """Why each DeformConv node cannot use TensorRT's built-in ModulatedDeformConv2d plugin."""
    problems = []
    for i, node in enumerate(n for n in onnx_model.graph.node if n.op_type == "DeformConv"):
        a = _attrs(node)
        where = f"DeformConv node {node.name or i!r}"
        kernel = list(a.get("kernel_shape", []))
        if kernel and len(kernel) != 2:
            problems.append(f"{where}: {len(kernel)}-D kernel {kernel} (the plugin is 2-D only)")
        pads = list(a.get("pads", [0, 0, 0, 0]))
        half = len(pads) // 2
        if len(pads) % 2 or pads[:half] != pads[half:]:
            problems.append(f"{where}: asymmetric pads {pads} (begin {pads[:half]} != end {pads[half:]}); "
                            f"TensorRT's plugin pads both sides of an axis equally (--dcn-plugin restore does not)")
        for key in ("group", "offset_group"):
            if int(a.get(key, 1)) != 1:
                problems.append(f"{where}: {key}={a[key]} (must be 1)")
        for key in ("dilations", "strides"):
            values = list(a.get(key, []))
            if any(v < 1 for v in values):
                problems.append(f"{where}: {key} {values} must be positive")
    return problems


def check_builtin_dcn_compat(onnx_model: "onnx.ModelProto") -> None:
    """Raise a `RestoreError` naming every DeformConv node the built-in plugin cannot take."""
    problems = builtin_dcn_problems(onnx_model)
    if problems:
        raise RestoreError("TensorRT's built-in DeformConv plugin cannot take this graph: " + "; ".join(problems)
                           + " — use --dcn-plugin restore, or re-export with --dcn decomposed")


# ----------------------------------------------------------------------------- graph surgery


def _initializer_dims(model: "onnx.ModelProto", name: str):
    for init in model.graph.initializer:
        if init.name == name:
            return list(init.dims), init.data_type
    for node in model.graph.node:  # weights can also come from Constant nodes
        if node.op_type == "Constant" and node.output[0] == name:
            value = _attrs(node).get("value")
            if value is not None:
                return list(value.dims), value.data_type
    return None, None


def _add_zero_bias(model: "onnx.ModelProto", node, index: int) -> None:
    """DeformConv's bias is optional; both TensorRT plugins want a tensor."""
    import numpy as np
    from onnx import helper, numpy_helper

    dims, dtype = _initializer_dims(model, node.input[1])
    if dims is None:
        raise RestoreError(f"DeformConv node {node.name!r}: its weight is not a constant, cannot add the bias")
    name = f"{node.name or f'deformconv_{index}'}_zero_bias"
    zeros = np.zeros(dims[0], dtype=helper.tensor_dtype_to_np_dtype(dtype))
    model.graph.initializer.append(numpy_helper.from_array(zeros, name))
    inputs = list(node.input) + [""] * (5 - len(node.input))
    inputs[3] = name
    node.input[:] = inputs[: max(4, len(node.input))]


def _to_restore_plugin(node, weight_dims) -> None:
    """Rename a DeformConv node to our plugin; all attributes explicit (no plugin defaults)."""
    from onnx import helper

    attrs = _attrs(node)
    problems = plugin_problems(attrs, weight_dims)
    if problems:
        raise RestoreError(f"DeformConv node {node.name!r} does not fit the restore plugin: {'; '.join(problems)}")
    if len(node.input) < 5 or not node.input[4]:
        raise RestoreError(f"DeformConv node {node.name!r} has no mask input; the restore plugin needs one")
    if "kernel_shape" not in attrs:
        if weight_dims is None:
            raise RestoreError(f"DeformConv node {node.name!r}: no kernel_shape and no constant weight")
        attrs["kernel_shape"] = list(weight_dims[2:])
    for key, (_, default) in ATTRIBUTES.items():
        attrs.setdefault(key, default)
    node.op_type, node.domain = PLUGIN_NAME, PLUGIN_NAMESPACE
    del node.attribute[:]
    node.attribute.extend(helper.make_attribute(k, list(v) if isinstance(v, tuple) else v)
                          for k, v in sorted(attrs.items()))
    node.attribute.extend([helper.make_attribute("plugin_namespace", PLUGIN_NAMESPACE),
                           helper.make_attribute("plugin_version", PLUGIN_VERSION)])


def prepare_graph_for_trt(onnx_model: "onnx.ModelProto", dcn_plugin: str = "builtin") -> "onnx.ModelProto":
    """A copy of the graph ready for TensorRT's ONNX parser.

    Every DeformConv without a bias gets a zero bias. With ``dcn_plugin="restore"`` each
    DeformConv becomes ``restore::DeformConv2dRestore`` (op type + ``plugin_namespace``
    attribute + custom domain, attributes kept and completed) for our plugin."""
    import onnx

    check_dcn_plugin(dcn_plugin)
    model = onnx.ModelProto()
    model.CopyFrom(onnx_model)
    for i, node in enumerate(n for n in model.graph.node if n.op_type == "DeformConv"):
        if len(node.input) < 4 or not node.input[3]:
            _add_zero_bias(model, node, i)
        if dcn_plugin == "restore":
            _to_restore_plugin(node, _initializer_dims(model, node.input[1])[0])
    if dcn_plugin == "restore" and not any(o.domain == PLUGIN_NAMESPACE for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(PLUGIN_NAMESPACE, 1))
    return model


# ----------------------------------------------------------------------------- engine


def _network_flags(trt) -> int:
    # Explicit batch is the only mode (and the flag deprecated) from TensorRT 10 on.
    if int(trt.__version__.split(".")[0]) >= 10:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def _parse(trt, network, logger, model: "onnx.ModelProto") -> None:
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model.SerializeToString()):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise RestoreError("TensorRT's ONNX parser failed: " + " | ".join(errors[:3]))


def build_engine(onnx_path: str | Path, engine_path: str | Path, *, min_hw, opt_hw, max_hw,
                 batch=DEFAULT_BATCH, fp16: bool = False, workspace_mb: int = 2048,
                 timing_cache: str | Path | None = None, dcn_plugin: str = "builtin", tf32: bool = False) -> Path:
    """Build a serialized engine from an ONNX file (explicit batch, one optimisation profile).

    `timing_cache` (a file) is loaded when present and saved after the build, which
    makes rebuilds of similar networks much faster. TF32 (on by default in TensorRT for
    Ampere and newer) is off unless asked for, so an fp32 engine matches PyTorch to ~1e-5.
    `workspace_mb` caps the scratch memory TensorRT's tactics may use (MiB).
    `dcn_plugin` says which plugin runs DeformConv nodes ("builtin" or "restore"); graphs
    without them (e.g. ``--dcn decomposed``) need neither."""
    import onnx

    check_dcn_plugin(dcn_plugin)
    if isinstance(workspace_mb, bool) or not isinstance(workspace_mb, int) or workspace_mb < 1:
        raise RestoreError(f"the TensorRT workspace must be a positive number of MB, got {workspace_mb!r}")
    trt = require_tensorrt()
    model = onnx.load(str(onnx_path))
    bad = unsupported_ops(model)
    if bad:
        raise RestoreError(f"TensorRT's ONNX parser does not support: {', '.join(bad)}")
    if dcn_plugin == "builtin":
        check_builtin_dcn_compat(model)
    elif has_deformconv(model):
        register_plugin()
    model = prepare_graph_for_trt(model, dcn_plugin)

    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")  # registers ModulatedDeformConv2d for DeformConv
    try:
        builder = trt.Builder(logger)
    except Exception:  # TypeError/RuntimeError when CUDA cannot initialise
        builder = None
    if builder is None:
        raise RestoreError("TensorRT cannot create a builder: it needs an NVIDIA GPU with a working CUDA driver")
    network = builder.create_network(_network_flags(trt))
    _parse(trt, network, logger, model)

    inp = network.get_input(0)
    shapes = profile_shapes(inp.shape[1], min_hw, opt_hw, max_hw, batch)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if not tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    profile.set_shape(inp.name, shapes.min, shapes.opt, shapes.max)
    config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else None
    if cache_path is not None:
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RestoreError("TensorRT failed to build the engine (see the TensorRT log above)")
    if cache_path is not None:
        atomic_write(cache_path, bytes(config.get_timing_cache().serialize()))
    engine_path = Path(engine_path)
    atomic_write(engine_path, bytes(serialized))
    return engine_path


# ----------------------------------------------------------------------------- backend


def _module_fingerprint(module: nn.Module, extra: dict) -> str:
    """Hash of weights + settings: the cache key of exported ONNX files and engines."""
    digest = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class TensorRTBackend:
    """``backend(batch) -> batch`` through a TensorRT engine; torch CUDA tensors are the I/O
    buffers and TensorRT runs on torch's current CUDA stream. Batches larger than the
    profile's max batch are split; sizes outside the profile are refused clearly."""

    name = "tensorrt"

    def __init__(self, engine_path: str | Path, device: str = "cuda", *, dcn_plugin: str = "builtin"):
        trt = require_trt_build(dcn_plugin)
        self.device = _require_cuda(device)
        self.engine_path = Path(engine_path)
        if not self.engine_path.is_file():
            raise RestoreError(f"TensorRT engine {self.engine_path} does not exist")
        logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(logger, "")
        if dcn_plugin == "restore":
            register_plugin()
        with torch.cuda.device(torch.device(self.device)):
            self.engine = trt.Runtime(logger).deserialize_cuda_engine(self.engine_path.read_bytes())
            if self.engine is None:
                raise RestoreError(f"cannot load TensorRT engine {self.engine_path} (built by another TensorRT "
                                   f"version or GPU, or it needs the restore DCN plugin)")
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        modes = {n: self.engine.get_tensor_mode(n) for n in names}
        self.input_name = next(n for n in names if modes[n] == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if modes[n] == trt.TensorIOMode.OUTPUT)
        self.profile = ProfileShapes(*[tuple(s) for s in self.engine.get_tensor_profile_shape(self.input_name, 0)])
        self.in_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(self.input_name))
        self.out_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(self.output_name))
        self.trt_version = trt.__version__

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if not self.profile.contains((self.profile.min[0], *x.shape[1:])):
            raise RestoreError(f"input {'×'.join(map(str, x.shape[1:]))} is outside the engine's profile "
                               f"(min {self.profile.min[1:]}, max {self.profile.max[1:]}); use tiling or rebuild")
        self.context.set_input_shape(self.input_name, tuple(x.shape))
        out = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=self.out_dtype,
                          device=x.device)
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        self.context.set_tensor_address(self.output_name, out.data_ptr())
        if not self.context.execute_async_v3(torch.cuda.current_stream(x.device).cuda_stream):
            raise RestoreError("TensorRT failed to run the engine")
        return out

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.detach().to(self.device, self.in_dtype).contiguous()
        step = self.profile.max[0]
        outs = [self._run(x[i : i + step]) for i in range(0, x.shape[0], step)]
        return torch.cat(outs).to("cpu", torch.float32)

    def describe(self) -> str:
        gpu = torch.cuda.get_device_name(torch.device(self.device))
        return f"tensorrt {self.trt_version} on {self.device} ({gpu}), engine {self.engine_path.name}"

    @classmethod
    def for_model(cls, module: nn.Module, *, entry: "ModelEntry", device: str = "cuda",
                  onnx_path: str | Path | None = None, tile: int = 64, max_side: int = 1024, fp16: bool = False,
                  dcn: str = "deformconv", dcn_plugin: str = "builtin",
                  cache_dir: str | Path | None = None) -> "TensorRTBackend":
        """Export (unless `onnx_path` is given), build an engine with the tile as opt shape,
        and cache both (next to the user's ONNX, or in a temp folder) keyed by a hash of
        the weights and settings, so the next run loads instead of rebuilding.

        `dcn_plugin` picks the plugin for DCN layers ("builtin" or "restore"); it does not
        matter (and is not required) for nets without DCN layers or with ``dcn="decomposed"``."""
        from restore.export.cache import private_cache_dir
        from restore.export.onnx import export_onnx, has_dcn, model_metadata, module_in_channels

        check_dcn_plugin(dcn_plugin)
        if onnx_path is not None:
            deformconv = has_deformconv(Path(onnx_path))
        else:
            deformconv = dcn == "deformconv" and has_dcn(module)
        if not deformconv:
            dcn_plugin = "builtin"  # no DeformConv node in the graph: nothing for a plugin to do
        trt = require_trt_build(dcn_plugin)
        device = _require_cuda(device)
        settings = dict(tile=tile, max_side=max_side, fp16=fp16, dcn=dcn, plugin=dcn_plugin, trt=trt.__version__,
                        gpu=torch.cuda.get_device_name(torch.device(device)))
        cache = Path(cache_dir) if cache_dir else private_cache_dir("tensorrt")
        if onnx_path is not None:
            src = Path(onnx_path)
            key = hashlib.sha256(src.read_bytes() + json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
            engine_path = src.with_name(f"{src.stem}.{key}.engine")
        else:
            key = _module_fingerprint(module, settings)
            src = cache / f"{entry.name}.{key}.onnx"
            engine_path = cache / f"{entry.name}.{key}.engine"
            if not engine_path.is_file() and not src.is_file():
                in_channels = module_in_channels(module, entry.channels + int(entry.noise_map))
                export_onnx(module, src, in_channels=in_channels, dcn=dcn,
                            metadata=model_metadata(module, entry=entry, tile=tile))
        if not engine_path.is_file():
            min_hw, opt_hw, max_hw = profile_hw(tile, int(getattr(module, "size_multiple", 1)), max_side)
            build_engine(src, engine_path, min_hw=min_hw, opt_hw=opt_hw, max_hw=max_hw, fp16=fp16,
                         timing_cache=cache / "timing.cache", dcn_plugin=dcn_plugin)
        return cls(engine_path, device, dcn_plugin=dcn_plugin)


def _torch_dtype(trt, dtype) -> torch.dtype:
    return {trt.float32: torch.float32, trt.float16: torch.float16}.get(dtype, torch.float32)
