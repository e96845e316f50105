"""TensorRT support: everything short of the GPU runs anywhere (graph preparation, op
allow-list, the built-in DCN plugin's constraints, our plugin's registration metadata,
optimisation profiles, the engine build's settings against a stand-in `tensorrt` module,
the CLI options down to the engine builder / backend, clear errors without TensorRT or
Triton). Our plugin's Triton kernel is checked in tests/test_dcn_triton.py. The engine
tests at the bottom need TensorRT and a CUDA GPU (markers `tensorrt` + `gpu`) and are
skipped elsewhere."""

from __future__ import annotations

import inspect
import sys
import types

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from restore.errors import RestoreError  # noqa: E402
from restore.export.plugins import dcn_plugin  # noqa: E402
from restore.export.plugins.dcn_plugin import (  # noqa: E402
    ATTRIBUTES,
    INPUTS,
    PLUGIN_ID,
    PLUGIN_NAME,
    PLUGIN_NAMESPACE,
    SPEC,
    TRT_MISSING,
    output_shape,
    plugin_problems,
    register_plugin,
)
from restore.export.tensorrt import (  # noqa: E402
    TensorRTBackend,
    build_engine,
    builtin_dcn_problems,
    check_builtin_dcn_compat,
    has_deformconv,
    prepare_graph_for_trt,
    profile_hw,
    profile_shapes,
    require_tensorrt,
    unsupported_ops,
)
from restore.models.genotype import HiNASGenotype, Node, save_genotype  # noqa: E402
from restore.zoo.registry import ModelEntry  # noqa: E402


def deformconv_model(pads=(1, 1, 1, 1), group=1, with_bias=False, extra_nodes=(), cout=4) -> onnx.ModelProto:
    """x (1×4×8×8), offset, mask → one DeformConv (3×3, weight initializer) → y."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((cout, 4 // group, 3, 3)).astype(np.float32), "w")]
    if with_bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"))
    node = helper.make_node("DeformConv", ["x", "w", "offset", "b" if with_bias else "", "mask"], ["y"],
                            name="dcn0", kernel_shape=[3, 3], pads=list(pads), group=group)
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        [node, *extra_nodes], "dcn",
        [helper.make_tensor_value_info("x", f32, [1, 4, 8, 8]),
         helper.make_tensor_value_info("offset", f32, [1, 18, 8, 8]),
         helper.make_tensor_value_info("mask", f32, [1, 9, 8, 8])],
        [helper.make_tensor_value_info("y", f32, ["n", "c", "h", "w"])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


def _node(model, op_type):
    return next(n for n in model.graph.node if n.op_type == op_type)


@pytest.fixture
def no_tensorrt(monkeypatch):
    """Make `import tensorrt` fail even where it is installed."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", None)
    monkeypatch.setattr(dcn_plugin, "_registered", False)


# --------------------------------------------------------------------------- graph preparation


def test_restore_plugin_rewrite():
    model = deformconv_model()
    prepared = prepare_graph_for_trt(model, "restore")
    assert "DeformConv" not in {n.op_type for n in prepared.graph.node}
    node = _node(prepared, PLUGIN_NAME)
    assert node.domain == PLUGIN_NAMESPACE == "restore"
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["plugin_namespace"] == b"restore" and attrs["plugin_version"] == b"1"
    # original attributes kept, ONNX defaults written out (a plugin attribute has no default)
    assert attrs["pads"] == [1, 1, 1, 1] and attrs["kernel_shape"] == [3, 3]
    assert attrs["strides"] == [1, 1] and attrs["dilations"] == [1, 1]
    assert attrs["group"] == 1 and attrs["offset_group"] == 1
    assert set(ATTRIBUTES) <= set(attrs)
    # the missing bias became a zero initializer, so the plugin always gets five inputs
    assert len(node.input) == len(INPUTS) and all(node.input)
    bias = next(t for t in prepared.graph.initializer if t.name == node.input[3])
    assert numpy_helper.to_array(bias).tolist() == [0.0] * 4
    assert any(o.domain == "restore" for o in prepared.opset_import)
    onnx.checker.check_model(prepared)
    assert unsupported_ops(prepared) == []
    assert _node(model, "DeformConv").input[3] == ""  # the input graph is not modified


def test_builtin_preparation_keeps_deformconv_and_its_results():
    ort = pytest.importorskip("onnxruntime")
    model = deformconv_model()
    prepared = prepare_graph_for_trt(model, "builtin")
    node = _node(prepared, "DeformConv")
    assert node.domain == "" and node.input[3] and node.input[4] == "mask"
    rng = np.random.default_rng(1)
    feeds = {"x": rng.random((1, 4, 8, 8), dtype=np.float32),
             "offset": rng.normal(0, 2, (1, 18, 8, 8)).astype(np.float32),
             "mask": rng.random((1, 9, 8, 8), dtype=np.float32)}
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]  # noqa: E731
    np.testing.assert_array_equal(run(model), run(prepared))


def test_existing_bias_is_kept():
    prepared = prepare_graph_for_trt(deformconv_model(with_bias=True), "restore")
    assert _node(prepared, PLUGIN_NAME).input[3] == "b"
    assert len(prepared.graph.initializer) == 2


def test_unknown_plugin_choice():
    with pytest.raises(RestoreError, match="builtin"):
        prepare_graph_for_trt(deformconv_model(), "torchvision")


# --------------------------------------------------------------------------- allow-list and DCN rules


def test_unsupported_ops_lists_what_the_parser_cannot_take():
    extra = [helper.make_node("STFT", ["y"], ["s"]), helper.make_node("FusedConv", ["y"], ["f"], domain="com.microsoft")]
    model = deformconv_model(extra_nodes=extra)
    assert unsupported_ops(model) == ["STFT", "com.microsoft::FusedConv"]
    assert unsupported_ops(deformconv_model()) == []


def test_asymmetric_pads_are_refused_with_an_explanation():
    model = deformconv_model(pads=(1, 1, 0, 0))
    problems = builtin_dcn_problems(model)
    assert len(problems) == 1 and "dcn0" in problems[0] and "asymmetric pads [1, 1, 0, 0]" in problems[0]
    with pytest.raises(RestoreError, match="asymmetric pads.*--dcn-plugin restore.*--dcn decomposed"):
        check_builtin_dcn_compat(model)
    check_builtin_dcn_compat(deformconv_model())  # symmetric: fine
    # our plugin's Triton kernel takes them (begin pads place the taps, end pads size the output)
    node = _node(prepare_graph_for_trt(model, "restore"), PLUGIN_NAME)
    assert helper.get_attribute_value(next(a for a in node.attribute if a.name == "pads")) == [1, 1, 0, 0]


def test_groups_are_refused_by_the_builtin_plugin_only():
    problems = builtin_dcn_problems(deformconv_model(group=2))
    assert any("group=2" in p for p in problems)
    node = _node(prepare_graph_for_trt(deformconv_model(group=2), "restore"), PLUGIN_NAME)
    assert helper.get_attribute_value(next(a for a in node.attribute if a.name == "group")) == 2


def test_restore_plugin_attribute_rules():
    assert plugin_problems({"strides": [2, 1], "dilations": [1, 3], "pads": [0, 1, 2, 0], "group": 2,
                            "offset_group": 4}, weight_dims=[6, 4, 3, 3]) == []
    problems = plugin_problems({"strides": [0, 1], "pads": [1, -1, 0, 0], "kernel_shape": [3, 3, 3], "group": 4,
                                "offset_group": 3}, weight_dims=[6, 2, 3, 3, 3])
    assert any(p.startswith("strides=[0, 1]") for p in problems)
    assert any(p.startswith("pads=[1, -1, 0, 0]") for p in problems)
    assert any(p.startswith("kernel_shape=[3, 3, 3]") for p in problems)
    problems = plugin_problems({"group": 4, "offset_group": 3}, weight_dims=[6, 2, 3, 3])
    assert problems == ["group=4 does not divide the 6 output channels",
                        "offset_group=3 does not divide the 8 input channels"]
    with pytest.raises(RestoreError, match="does not fit the restore plugin: group=4"):
        prepare_graph_for_trt(deformconv_model(group=4, cout=6), "restore")


# --------------------------------------------------------------------------- plugin metadata


def test_plugin_registration_metadata_matches_onnx_deformconv():
    schema = onnx.defs.get_schema("DeformConv", 19)
    assert SPEC.plugin_id == PLUGIN_ID == "restore::DeformConv2dRestore"
    assert (SPEC.namespace, SPEC.name, SPEC.version) == ("restore", "DeformConv2dRestore", "1")
    assert len(SPEC.inputs) == len(schema.inputs) == 5  # X, W, offset, B, mask in ONNX order
    assert [i.name.lower() for i in schema.inputs] == ["x", "w", "offset", "b", "mask"]
    assert SPEC.inputs == ("x", "weight", "offset", "bias", "mask")
    assert set(SPEC.attributes) == set(schema.attributes)


def test_plugin_output_shape_rule_matches_the_torch_op():
    from restore.models.dcn import deform_conv2d

    x, w = torch.rand(2, 4, 9, 11), torch.rand(6, 4, 3, 3)
    ho, wo = (9 + 2 - 3) // 2 + 1, (11 + 2 - 3) // 2 + 1  # stride 2, padding 1
    offset, mask, bias = torch.rand(2, 18, ho, wo) * 2, torch.rand(2, 9, ho, wo), torch.rand(6)
    want = deform_conv2d(x, offset, mask, w, bias, stride=2, padding=1, dilation=1)
    assert output_shape(x=x.shape, weight=w.shape, offset=offset.shape, bias=bias.shape,
                        mask=mask.shape) == tuple(want.shape)


# --------------------------------------------------------------------------- profiles


def test_profile_from_tile_and_size_multiple():
    assert profile_hw(64, 8) == ((8, 8), (64, 64), (1024, 1024))
    assert profile_hw(60, 8)[1] == (64, 64)  # tiles are rounded up to the multiple
    assert profile_hw(100, 1, max_side=64) == ((1, 1), (100, 100), (100, 100))  # max never below the tile
    assert profile_hw(64, 16, max_side=1000)[2] == (1008, 1008)
    shapes = profile_shapes(2, *profile_hw(64, 8))
    assert shapes.min == (1, 2, 8, 8) and shapes.opt == (16, 2, 64, 64) and shapes.max == (32, 2, 1024, 1024)
    assert shapes.contains((4, 2, 96, 40)) and not shapes.contains((4, 2, 2048, 40))
    with pytest.raises(RestoreError, match="min <= opt <= max"):
        profile_shapes(1, (64, 64), (32, 32), (128, 128))
    with pytest.raises(RestoreError):
        profile_hw(0, 8)


# --------------------------------------------------------------------------- without TensorRT


def test_clear_message_without_tensorrt(no_tensorrt, tmp_path):
    for call in (require_tensorrt, register_plugin, lambda: TensorRTBackend(tmp_path / "m.engine"),
                 lambda: build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", min_hw=(8, 8), opt_hw=(64, 64),
                                      max_hw=(128, 128)),
                 lambda: TensorRTBackend.for_model(torch.nn.Identity(), entry=ModelEntry("m", "denoise", 1))):
        with pytest.raises(RestoreError) as info:
            call()
        assert str(info.value) == TRT_MISSING
    assert "pip install 'restore[tensorrt]'" in TRT_MISSING and "NVIDIA GPU" in TRT_MISSING


def test_modules_import_without_tensorrt_and_triton():
    """Fresh interpreter: the TensorRT modules import lazily and without either package."""
    import subprocess

    code = ("import sys; sys.modules['tensorrt'] = None; import restore.export.tensorrt; "
            "import restore.export.plugins.dcn_plugin; assert 'triton' not in sys.modules, 'triton imported eagerly'; "
            "sys.modules['triton'] = None; from restore.export.plugins import dcn_triton; "
            "from restore.errors import RestoreError\n"
            "try:\n    dcn_triton.require_triton()\nexcept RestoreError as e:\n    print(e)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    from restore.export.plugins.dcn_triton import TRITON_MISSING

    assert result.stdout.strip() == TRITON_MISSING


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_clear_message_without_gpu(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))  # "installed"
    with pytest.raises(RestoreError, match="NVIDIA GPU"):
        TensorRTBackend(tmp_path / "m.engine")


def test_cli_trt_without_tensorrt(no_tensorrt, tmp_path):
    """--trt alone fails at once; with --onnx too, see tests/test_export.py (ONNX still written)."""
    from restore.cli import app

    genotype = tmp_path / "tiny.json"
    save_genotype(HiNASGenotype(cell=(Node((0, 1), ("conv_3x3", "skip")),), widths=(0,), base_width=4,
                                stem_channels=8, aspp=False, name="tiny"), genotype)
    result = CliRunner().invoke(app, ["export", str(genotype), "--trt", "-o", str(tmp_path)])
    assert result.exit_code != 0 and TRT_MISSING in result.output
    assert not list(tmp_path.glob("*.onnx"))  # failed before the export


# --------------------------------------------------------------------------- stand-in TensorRT (no GPU)


def fake_tensorrt(calls: dict, *, with_plugin_api: bool = True) -> types.ModuleType:
    """A `tensorrt` module that records what `build_engine` asks of it (the GPU boundary)
    and, with `with_plugin_api`, a `tensorrt.plugin` that records the plugin definition."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.8.0.43"

    class Logger:
        WARNING = "warning"

        def __init__(self, level):
            pass

    class Input:
        name, shape = "x", (-1, 4, -1, -1)

    class Network:
        def get_input(self, index):
            return Input()

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse(self, data):
            calls["parsed"] = onnx.load_from_string(data)
            return True

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            calls["profile"] = (name, tuple(lo), tuple(opt), tuple(hi))

    class TimingCache:
        def serialize(self):
            return b"timing"

    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls["memory_pool"] = (pool, size)

        def set_flag(self, flag):
            calls.setdefault("flags", []).append(flag)

        def clear_flag(self, flag):
            calls.setdefault("cleared", []).append(flag)

        def add_optimization_profile(self, profile):
            calls["profiles"] = calls.get("profiles", 0) + 1

        def create_timing_cache(self, data):
            calls["timing_cache_in"] = data
            return TimingCache()

        def set_timing_cache(self, cache, ignore_mismatch):
            pass

        def get_timing_cache(self):
            return TimingCache()

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return b"serialized engine"

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, OnnxParser
    trt.init_libnvinfer_plugins = lambda logger, namespace: calls.__setitem__("libnvinfer_plugins", True)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.BuilderFlag = types.SimpleNamespace(FP16="fp16", TF32="tf32")
    if with_plugin_api:
        trtp = types.ModuleType("tensorrt.plugin")

        def decorator(kind):
            def with_id(plugin_id):
                def record(fn):
                    calls.setdefault("plugin", {})[kind] = (plugin_id, fn)
                    return fn
                return record
            return with_id

        trtp.register, trtp.autotune, trtp.impl = decorator("register"), decorator("autotune"), decorator("impl")
        trtp.TensorDesc = type("TensorDesc", (), {})
        trtp.AutoTuneCombination = lambda spec: spec
        trtp.from_shape_expr = lambda dims, dtype: (tuple(dims), dtype)
        trt.plugin = trtp
    return trt


@pytest.fixture
def stand_in_trt(monkeypatch):
    """Install `fake_tensorrt` (with the plugin API); returns the dict of recorded calls."""
    calls: dict = {}
    trt = fake_tensorrt(calls)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", trt.plugin)
    monkeypatch.setattr(dcn_plugin, "_registered", False)
    return calls


def test_plugin_definition_registered_with_tensorrt(stand_in_trt):
    pytest.importorskip("triton")
    register_plugin()
    register_plugin()  # idempotent
    plugin = stand_in_trt["plugin"]
    kinds = ("register", "autotune", "impl")
    assert {kind: pid for kind, (pid, _) in plugin.items()} == dict.fromkeys(kinds, PLUGIN_ID)
    describe, impl = plugin["register"][1], plugin["impl"][1]
    described = list(inspect.signature(describe).parameters)
    assert described[: len(INPUTS)] == list(INPUTS) and set(described[len(INPUTS):]) == set(ATTRIBUTES)
    run = list(inspect.signature(impl).parameters)
    assert run[: len(INPUTS)] == list(INPUTS) and run[-2:] == ["outputs", "stream"]
    assert set(run[len(INPUTS):-2]) <= set(ATTRIBUTES)  # the attributes serialised into the engine
    assert set(run[len(INPUTS):-2]) == {"dilations", "group", "offset_group", "pads", "strides"}
    # output shape expression: N of x, C_out of weight, H×W of the offset grid
    shapes = dict(x=(2, 4, 9, 11), weight=(6, 4, 3, 3), offset=(2, 18, 5, 6), bias=(6,), mask=(2, 9, 5, 6))
    descs = {k: types.SimpleNamespace(shape_expr=v, dtype="float16") for k, v in shapes.items()}
    attrs = {k: None for k in described[len(INPUTS):]}
    assert describe(**descs, **attrs) == ((2, 6, 5, 6), "float16") == (output_shape(**shapes), "float16")
    (combination,) = plugin["autotune"][1](*[None] * len(INPUTS), outputs=None)
    assert combination.split(", ") == ["FP32|FP16"] * (len(INPUTS) + 1)


@pytest.mark.parametrize("plugin", ["builtin", "restore"])
def test_build_engine_settings_reach_tensorrt(stand_in_trt, tmp_path, plugin):
    if plugin == "restore":
        pytest.importorskip("triton")
    onnx_path, engine_path, cache = tmp_path / "m.onnx", tmp_path / "out" / "m.engine", tmp_path / "timing.cache"
    onnx.save(deformconv_model(), str(onnx_path))
    build_engine(onnx_path, engine_path, min_hw=(8, 8), opt_hw=(96, 96), max_hw=(512, 512), workspace_mb=768,
                 fp16=True, timing_cache=cache, dcn_plugin=plugin)
    assert engine_path.read_bytes() == b"serialized engine" and cache.read_bytes() == b"timing"
    assert stand_in_trt["memory_pool"] == ("workspace", 768 << 20)
    assert stand_in_trt["profile"] == ("x", (1, 4, 8, 8), (16, 4, 96, 96), (32, 4, 512, 512))
    assert stand_in_trt["profiles"] == 1 and stand_in_trt["flags"] == ["fp16"] and stand_in_trt["cleared"] == ["tf32"]
    assert stand_in_trt["libnvinfer_plugins"]
    ops = {(n.domain, n.op_type) for n in stand_in_trt["parsed"].graph.node}
    if plugin == "builtin":
        assert ops == {("", "DeformConv")} and "plugin" not in stand_in_trt
    else:
        assert ops == {("restore", PLUGIN_NAME)} and stand_in_trt["plugin"]["impl"][0] == PLUGIN_ID


def test_build_engine_refuses_a_bad_workspace(stand_in_trt, tmp_path):
    for bad in (0, -5, 1.5, True):
        with pytest.raises(RestoreError, match="workspace must be a positive number of MB"):
            build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", min_hw=(8, 8), opt_hw=(64, 64),
                         max_hw=(128, 128), workspace_mb=bad)


def test_decomposed_graph_needs_no_plugin(stand_in_trt, tmp_path, monkeypatch):
    """No DeformConv node: the restore plugin is not registered, so Triton is not needed."""
    from restore.export.plugins import dcn_triton

    monkeypatch.setattr(dcn_triton, "triton", None)
    relu = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                             [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, "h", "w"])],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, "h", "w"])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(relu, opset_imports=[helper.make_opsetid("", 19)], ir_version=9), str(path))
    assert not has_deformconv(path) and has_deformconv(deformconv_model())
    build_engine(path, tmp_path / "relu.engine", min_hw=(8, 8), opt_hw=(64, 64), max_hw=(128, 128),
                 dcn_plugin="restore")
    assert "plugin" not in stand_in_trt


def test_restore_plugin_needs_tensorrt_10_6_and_triton(stand_in_trt, monkeypatch, tmp_path):
    from restore.export.plugins import dcn_triton
    from restore.export.tensorrt import require_trt_build

    assert require_trt_build("builtin") is sys.modules["tensorrt"]
    monkeypatch.setattr(dcn_triton, "triton", None)
    for call in (lambda: require_trt_build("restore"), register_plugin,
                 lambda: TensorRTBackend(tmp_path / "m.engine", dcn_plugin="restore")):
        with pytest.raises(RestoreError) as info:
            call()
        assert str(info.value) == dcn_triton.TRITON_MISSING
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", None)  # TensorRT < 10.6
    with pytest.raises(RestoreError, match=r"needs TensorRT >= 10.6 \(tensorrt.plugin\); found 10.8.0.43"):
        require_trt_build("restore")
    with pytest.raises(RestoreError, match="unknown DCN plugin 'torchvision'"):
        require_trt_build("torchvision")


# --------------------------------------------------------------------------- CLI options down to the GPU boundary


@pytest.fixture(scope="module")
def dcn_genotype(tmp_path_factory):
    path = tmp_path_factory.mktemp("genotype") / "tiny-dcn.json"
    save_genotype(HiNASGenotype(cell=(Node((0, 1), ("def_conv_3x3", "skip")),), widths=(0,), base_width=4,
                                stem_channels=8, aspp=False, name="tiny-dcn"), path)
    return path


@pytest.fixture
def fast_export(monkeypatch):
    """The ONNX step of `restore export` (dynamo export + ONNX Runtime parity, covered in
    tests/test_export.py) replaced by writing a one-DeformConv graph: these tests are about
    the TensorRT options."""
    from restore.export import onnx as onnx_export

    def export_onnx(module, path, **kwargs):
        onnx.save(deformconv_model(), str(path))
        return Path(path)

    report = types.SimpleNamespace(providers=["CPUExecutionProvider"], atol=1e-4, table=lambda: "",
                                   raise_on_failure=lambda: None)
    monkeypatch.setattr(onnx_export, "export_onnx", export_onnx)
    monkeypatch.setattr(onnx_export, "check_parity", lambda *args, **kwargs: report)


def _record_build(monkeypatch) -> list:
    """Replace the engine builder (the GPU step) by one that records its arguments."""
    from restore.export import tensorrt as trt_export

    builds = []

    def fake_build(onnx_path, engine_path, **kwargs):
        builds.append(dict(kwargs, onnx_path=Path(onnx_path)))
        Path(engine_path).write_bytes(b"engine")
        return Path(engine_path)

    monkeypatch.setattr(trt_export, "build_engine", fake_build)
    return builds


@pytest.mark.parametrize("options, plugin, workspace, tile", [
    ([], "builtin", 2048, 64),
    (["--dcn-plugin", "restore", "--workspace", "512", "--tile", "40"], "restore", 512, 40),
])
def test_cli_export_trt_options_reach_the_engine_builder(stand_in_trt, fast_export, monkeypatch, dcn_genotype,
                                                         tmp_path, options, plugin, workspace, tile):
    from restore.cli import app

    if plugin == "restore":
        pytest.importorskip("triton")
    builds = _record_build(monkeypatch)
    result = CliRunner().invoke(app, ["export", str(dcn_genotype), "--trt", "-o", str(tmp_path), *options])
    assert result.exit_code == 0, result.output
    (build,) = builds
    assert build["dcn_plugin"] == plugin and build["workspace_mb"] == workspace and build["fp16"] is False
    assert (build["min_hw"], build["opt_hw"], build["max_hw"]) == profile_hw(tile, 1)
    assert build["onnx_path"] == tmp_path / "tiny-dcn.onnx" and build["timing_cache"] == tmp_path / "timing.cache"
    assert has_deformconv(build["onnx_path"])
    assert f"workspace {workspace} MB" in result.output and f"optimised for {tile}" in result.output
    assert ("restore Triton plugin" if plugin == "restore" else "built-in ModulatedDeformConv2d") in result.output


@pytest.mark.parametrize("args, message", [
    (["--onnx", "--dcn-plugin", "restore"], "--dcn-plugin and --workspace are TensorRT build options: add --trt"),
    (["--onnx", "--workspace", "64"], "--dcn-plugin and --workspace are TensorRT build options: add --trt"),
    (["--trt", "--dcn-plugin", "torchvision"], "unknown DCN plugin 'torchvision'; use one of builtin, restore"),
])
def test_cli_export_option_mistakes(stand_in_trt, dcn_genotype, tmp_path, args, message):
    from restore.cli import app

    result = CliRunner().invoke(app, ["export", str(dcn_genotype), "-o", str(tmp_path), *args])
    assert result.exit_code == 2 and result.output.strip() == f"error: {message}"
    assert not list(tmp_path.iterdir())  # nothing exported


def test_cli_trt_restore_plugin_without_triton(stand_in_trt, monkeypatch, dcn_genotype, tmp_path):
    """One line, no traceback, before the (slow) export."""
    from restore.cli import app
    from restore.export.plugins import dcn_triton

    monkeypatch.setattr(dcn_triton, "triton", None)
    result = CliRunner().invoke(app, ["export", str(dcn_genotype), "--trt", "--dcn-plugin", "restore",
                                      "-o", str(tmp_path)])
    assert result.exit_code == 2 and result.output.strip() == f"error: {dcn_triton.TRITON_MISSING}"
    assert "Traceback" not in result.output and not list(tmp_path.iterdir())


class _IdentityEngine:
    device = "cpu"

    def __call__(self, batch):
        return batch[:, :1]

    def describe(self):
        return "stand-in engine"


@pytest.fixture
def recorded_backend(stand_in_trt, monkeypatch):
    """`TensorRTBackend.for_model` replaced by a recorder (it needs a GPU past this point)."""
    calls = []

    def for_model(module, **kwargs):
        calls.append(kwargs)
        return _IdentityEngine()

    monkeypatch.setattr(TensorRTBackend, "for_model", staticmethod(for_model))
    return calls


def _image(tmp_path) -> Path:
    from PIL import Image

    path = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("options, tile, plugin", [
    ([], 64, "builtin"),
    (["--tile", "96", "--dcn-plugin", "restore"], 96, "restore"),
    (["--no-tile"], 64, "builtin"),
])
def test_cli_backend_tensorrt_passes_tile_and_plugin(recorded_backend, tmp_path, options, tile, plugin):
    from restore.cli import app

    if plugin == "restore":
        pytest.importorskip("triton")
    result = CliRunner().invoke(app, ["denoise", str(_image(tmp_path)), "-o", str(tmp_path / "out"),
                                      "--backend", "tensorrt", "--sigma", "25", *options])
    assert result.exit_code == 0, result.output
    (call,) = recorded_backend
    assert call["tile"] == tile and call["dcn_plugin"] == plugin and call["onnx_path"] is None
    assert (tmp_path / "out" / "in_denoise.png").is_file()


def test_bench_backend_tensorrt_passes_tile_and_plugin(recorded_backend):
    from restore.cli import app

    pytest.importorskip("triton")
    result = CliRunner().invoke(app, ["bench", "modnas-b", "--backend", "trt", "--size", "32", "--tile", "16",
                                      "--repeats", "1", "--dcn-plugin", "restore", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert recorded_backend == [dict(entry=recorded_backend[0]["entry"], device="cpu", onnx_path=None, tile=16,
                                     dcn_plugin="restore")]


def test_cli_dcn_plugin_mistakes_and_missing_packages(no_tensorrt, tmp_path, monkeypatch):
    from restore.cli import app
    from restore.export.plugins import dcn_triton

    image = str(_image(tmp_path))
    runs = {
        "--dcn-plugin only applies to --backend tensorrt, not torch": ["denoise", image, "--dcn-plugin", "restore"],
        TRT_MISSING: ["denoise", image, "--backend", "tensorrt"],
    }
    for message, args in runs.items():
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and result.output.strip() == f"error: {message}", result.output
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt({}))
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", sys.modules["tensorrt"].plugin)
    monkeypatch.setattr(dcn_triton, "triton", None)
    for args in (["denoise", image, "--backend", "tensorrt", "--dcn-plugin", "restore"],
                 ["bench", "--backend", "tensorrt", "--dcn-plugin", "restore"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and result.output.strip() == f"error: {dcn_triton.TRITON_MISSING}"
    assert not list(tmp_path.glob("*_denoise.png"))


# --------------------------------------------------------------------------- on a GPU with TensorRT

@pytest.fixture(scope="module")
def gpu_setup(tmp_path_factory):
    pytest.importorskip("tensorrt")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from restore.export.onnx import export_onnx
    from restore.models.build import build

    torch.manual_seed(0)
    genotype = HiNASGenotype(cell=(Node((0, 1), ("def_conv_3x3", "conv_3x3")),), widths=(1,), base_width=4,
                             stem_channels=8, aspp=True, name="hinas-dcn-tiny")
    net = build(genotype).eval()
    for m in net.modules():
        if hasattr(m, "offset_mask"):
            torch.nn.init.normal_(m.offset_mask.weight, std=0.3)
            torch.nn.init.normal_(m.offset_mask.bias, std=0.5)
    out = tmp_path_factory.mktemp("trt")
    paths = {mode: export_onnx(net, out / f"{mode}.onnx", in_channels=1, dcn=mode, metadata={})
             for mode in ("deformconv", "decomposed")}
    return net, paths, out


def _max_err(net, backend, x) -> float:
    with torch.no_grad():
        want = net(x)
    return float((backend(x) - want).abs().max())


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("mode, plugin", [("deformconv", "builtin"), ("deformconv", "restore"),
                                          ("decomposed", "builtin")])
def test_engine_matches_torch(gpu_setup, mode, plugin):
    net, paths, out = gpu_setup
    min_hw, opt_hw, max_hw = profile_hw(64, 1, max_side=256)
    engine = build_engine(paths[mode], out / f"{mode}-{plugin}.engine", min_hw=min_hw, opt_hw=opt_hw,
                          max_hw=max_hw, timing_cache=out / "timing.cache", dcn_plugin=plugin)
    assert (out / "timing.cache").is_file()
    backend = TensorRTBackend(engine, "cuda", dcn_plugin=plugin)
    assert backend.device == "cuda" and "tensorrt" in backend.describe()
    # opt shape, a non-square one, and more tiles than the profile's max batch (split)
    for x in (torch.rand(16, 1, 64, 64), torch.rand(1, 1, 40, 72), torch.rand(33, 1, 16, 16)):
        assert _max_err(net, backend, x) <= 1e-3
    with pytest.raises(RestoreError, match="outside the engine's profile"):
        backend(torch.rand(1, 1, 512, 64))


@pytest.mark.gpu
def test_triton_kernel_compiled_on_cuda():
    """The restore plugin's kernel compiled for the GPU (the CPU tests run it interpreted)."""
    pytest.importorskip("triton")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from restore.export.plugins.dcn_triton import deform_conv2d_triton
    from restore.models.dcn import deform_conv2d

    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(2, 8, 33, 47, generator=g), torch.randn(16, 8, 3, 3, generator=g)
    b = torch.randn(16, generator=g)
    offset = (torch.rand(2, 18, 17, 24, generator=g) - 0.5) * 8
    offset[:, ::7] += 30.0
    mask = torch.rand(2, 9, 17, 24, generator=g)
    x, w, b, offset, mask = (t.cuda() for t in (x, w, b, offset, mask))
    want = deform_conv2d(x, offset, mask, w, b, stride=2, padding=1, dilation=1)
    got = deform_conv2d_triton(x, w, offset, b, mask, strides=(2, 2), pads=(1, 1, 1, 1))
    assert float((got - want).abs().max()) <= 1e-4
    xh, wh, oh, bh, mh = (t.half() for t in (x, w, offset, b, mask))
    half = deform_conv2d_triton(xh, wh, oh, bh, mh, strides=(2, 2), pads=(1, 1, 1, 1))
    want = deform_conv2d(xh.float(), oh.float(), mh.float(), wh.float(), bh.float(), stride=2, padding=1, dilation=1)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), want, rtol=2e-3, atol=1e-2)  # float32 accumulation, fp16 output


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_fp16_engine(gpu_setup):
    net, paths, out = gpu_setup
    engine = build_engine(paths["decomposed"], out / "fp16.engine", min_hw=(1, 1), opt_hw=(64, 64),
                          max_hw=(128, 128), fp16=True)
    assert _max_err(net, TensorRTBackend(engine, "cuda"), torch.rand(4, 1, 64, 64)) <= 2e-2


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_for_model_through_tiled_runtime(gpu_setup, tmp_path):
    from restore.runtime.tiling import TileConfig, restore_tensor

    net, _, _ = gpu_setup
    entry = ModelEntry(name="hinas-dcn-tiny", task="denoise", channels=1)
    backend = TensorRTBackend.for_model(net, entry=entry, device="cuda", tile=64, max_side=256, cache_dir=tmp_path)
    (engine,) = tmp_path.glob("*.engine")
    built = engine.stat().st_mtime_ns
    x = torch.rand(1, 1, 100, 150)
    config = TileConfig(tile=64, overlap=16)
    with torch.no_grad():
        want = restore_tensor(net, x, config=config)
    assert float((restore_tensor(backend, x, config=config) - want).abs().max()) <= 1e-3
    TensorRTBackend.for_model(net, entry=entry, device="cuda", tile=64, max_side=256, cache_dir=tmp_path)
    assert engine.stat().st_mtime_ns == built  # cached: loaded, not rebuilt


def test_engine_cache_is_private(tmp_path, monkeypatch):
    import os
    import stat

    from restore.errors import RestoreError
    from restore.export.cache import private_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = private_cache_dir("tensorrt")
    assert stat.S_IMODE(folder.stat().st_mode) & 0o077 == 0
    os.chmod(folder, 0o777)
    with pytest.raises(RestoreError, match="writable by other users"):
        private_cache_dir("tensorrt")
