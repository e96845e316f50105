"""TensorRT support: everything short of the GPU runs anywhere (graph preparation, op
allow-list, the built-in DCN plugin's constraints, our plugin's registration metadata,
optimisation profiles, clear errors without TensorRT). The engine tests at the bottom
need TensorRT and a CUDA GPU (markers `tensorrt` + `gpu`) and are skipped elsewhere."""

from __future__ import annotations

import sys
import types

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
    reference_forward,
    register_plugin,
)
from restore.export.tensorrt import (  # noqa: E402
    TensorRTBackend,
    build_engine,
    builtin_dcn_problems,
    check_builtin_dcn_compat,
    prepare_graph_for_trt,
    profile_hw,
    profile_shapes,
    require_tensorrt,
    unsupported_ops,
)
from restore.models.genotype import HiNASGenotype, Node, save_genotype  # noqa: E402
from restore.zoo.registry import ModelEntry  # noqa: E402


def deformconv_model(pads=(1, 1, 1, 1), group=1, with_bias=False, extra_nodes=()) -> onnx.ModelProto:
    """x (1×4×8×8), offset, mask → one DeformConv (3×3, weight initializer) → y."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "w")]
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
    with pytest.raises(RestoreError, match="asymmetric pads.*--dcn decomposed"):
        check_builtin_dcn_compat(model)
    with pytest.raises(RestoreError, match="pads"):  # our plugin's kernel wants them symmetric too
        prepare_graph_for_trt(model, "restore")
    check_builtin_dcn_compat(deformconv_model())  # symmetric: fine


def test_groups_are_refused():
    problems = builtin_dcn_problems(deformconv_model(group=2))
    assert any("group=2" in p for p in problems)


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
    got = reference_forward(x, w, offset, bias, mask, strides=np.array([2, 2], np.int32),
                            pads=np.array([1, 1, 1, 1], np.int32), dilations=np.array([1, 1], np.int32))
    torch.testing.assert_close(got, want, rtol=0, atol=0)


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
