"""ONNX export, parity with PyTorch in ONNX Runtime, the ONNX Runtime backend, `restore export`.

Exports cost seconds each, so every exported file comes from a module-scoped fixture and
is shared by the tests that inspect it.
"""

from __future__ import annotations

import copy
import json
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from restore.cli import app  # noqa: E402
from restore.errors import RestoreError  # noqa: E402
from restore.export.onnx import (  # noqa: E402
    FP16_ATOL,
    check_parity,
    example_image,
    export_onnx,
    model_metadata,
    parity_inputs,
    read_metadata,
    resolve_model_source,
    save_onnx,
)
from restore.export.ort_backend import OnnxRuntimeBackend, default_dcn_mode  # noqa: E402
from restore.models.build import build, resolve_genotype  # noqa: E402
from restore.models.genotype import HiNASGenotype, Node, from_json, save_genotype  # noqa: E402
from restore.runtime.backends import TorchBackend  # noqa: E402
from restore.runtime.tiling import TileConfig, restore_tensor  # noqa: E402
from restore.zoo.registry import ModelEntry  # noqa: E402

DCN_MODES = ("deformconv", "decomposed")
HINAS_DCN = HiNASGenotype(cell=(Node((0, 1), ("def_conv_3x3", "conv_3x3")),), widths=(1,), base_width=4,
                          stem_channels=8, aspp=False, name="hinas-dcn-tiny")


def _op_types(path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def _perturb(net: torch.nn.Module) -> torch.nn.Module:
    """Move DCN offsets and BN statistics far from their init (zero offsets test little)."""
    for m in net.modules():
        if hasattr(m, "offset_mask"):  # offsets of a few pixels: off-grid and off-image samples
            torch.nn.init.normal_(m.offset_mask.weight, std=0.3)
            torch.nn.init.normal_(m.offset_mask.bias, std=0.5)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _hinas_dcn_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return _perturb(build(HINAS_DCN))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def real_image() -> np.ndarray:
    return example_image()


@pytest.fixture(scope="module")
def modnas_cli(tmp_path_factory):
    """`restore export modnas-b --onnx -o DIR` through the CLI: the MoD-NAS export of this file."""
    out = tmp_path_factory.mktemp("modnas")
    result = CliRunner().invoke(app, ["export", "modnas-b", "--onnx", "-o", str(out)])
    return result, out / "modnas-b.onnx"


@pytest.fixture(scope="module")
def modnas_b() -> torch.nn.Module:
    module, entry, note = resolve_model_source("modnas-b")  # same seeded random init as the CLI
    assert entry.name == "modnas-b" and "random" in note
    return module


@pytest.fixture(scope="module")
def hinas_net() -> torch.nn.Module:
    return _hinas_dcn_net()


@pytest.fixture(scope="module")
def hinas_run(hinas_net, tmp_path_factory):
    """The HiNAS net as a training run folder (genotype.json + weights): a CLI model source."""
    from safetensors.torch import save_file

    run = tmp_path_factory.mktemp("runs") / "hinas-dcn-tiny"
    run.mkdir()
    save_genotype(HINAS_DCN, run / "genotype.json")
    save_file({k: v.contiguous() for k, v in hinas_net.state_dict().items()}, str(run / "model.safetensors"))
    return run


@pytest.fixture(scope="module")
def hinas_cli(hinas_run, tmp_path_factory):
    """`restore export RUN --onnx --trt` where TensorRT is missing: ONNX done, then one error."""
    out = tmp_path_factory.mktemp("hinas-cli")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "tensorrt", None)
        result = CliRunner().invoke(app, ["export", str(hinas_run), "--onnx", "--trt", "-o", str(out)])
    return result, out / "hinas-dcn-tiny.onnx"


@pytest.fixture(scope="module")
def hinas_exports(hinas_net, hinas_cli, tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("hinas") / "decomposed.onnx"
    meta = model_metadata(hinas_net, name="hinas-dcn-tiny")
    return {"deformconv": hinas_cli[1],
            "decomposed": export_onnx(hinas_net, path, in_channels=1, dcn="decomposed", metadata=meta)}


# --------------------------------------------------------------------------- MoD-NAS (modnas-b)


def test_cli_export_modnas_b(modnas_cli):
    """Exit 0 means the parity check inside passed: ≤ 1e-4 on every input."""
    result, path = modnas_cli
    assert result.exit_code == 0, result.output
    assert path.is_file()
    for text in ("random-init", "opset 19", "parity", "CPUExecutionProvider", "atol 0.0001"):
        assert text in result.output
    # random batch-2 (dynamic batch), random non-square, real non-square crop
    rows = [line.split() for line in result.output.splitlines() if line.strip().endswith(("ok", "FAIL"))]
    assert [r[0] for r in rows] == ["2×1×64×64", "1×1×96×128", "1×1×88×120"]
    assert all(r[-1] == "ok" and float(r[1]) <= 1e-4 for r in rows)


def test_modnas_graph_and_metadata(modnas_cli):
    _, path = modnas_cli
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    meta = read_metadata(model)
    assert meta["model"] == "modnas-b" and meta["task"] == "denoise"
    assert meta["input_range"] == "[0,1]" and meta["tile_size"] == "64"
    assert meta["channels"] == "1" and meta["in_channels"] == "1" and meta["noise_map"] == "false"
    assert meta["dcn"] == "none" and meta["precision"] == "fp32" and meta["size_multiple"] == "8"
    assert meta["restore_version"]
    assert from_json(meta["genotype"]) == resolve_genotype("modnas-b")
    assert "DeformConv" not in _op_types(path)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims][1] == 1
    assert all(dims[i].dim_param for i in (0, 2, 3)), "batch, H and W must be dynamic"


def test_ort_backend_through_tiled_runtime_matches_torch(modnas_b, modnas_cli, real_image):
    _, path = modnas_cli
    backend = OnnxRuntimeBackend(path, device="cpu")
    assert backend.device == "cpu" and "CPUExecutionProvider" in backend.describe()
    gray = real_image.mean(axis=2)[:100, :150]  # not a multiple of 8: padding and edge tiles
    x = torch.from_numpy(np.ascontiguousarray(gray))[None, None]
    config = TileConfig(tile=64, overlap=16, batch_size=4)
    want = restore_tensor(TorchBackend(copy.deepcopy(modnas_b), device="cpu"), x, config=config, size_multiple=8)
    got = restore_tensor(backend, x, config=config, size_multiple=8)
    assert got.shape == want.shape == x.shape
    assert float((got - want).abs().max()) <= 1e-4


def test_cli_export_never_replaces_a_file_unasked(tmp_path, monkeypatch):
    import types

    from restore.export import onnx as onnx_export

    mine = tmp_path / "mine.onnx"
    mine.write_text("precious")
    result = CliRunner().invoke(app, ["export", "modnas-b", "--onnx", "-o", str(mine)])
    assert result.exit_code != 0 and "already exists; add --overwrite" in result.output
    assert mine.read_text() == "precious"
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    result = CliRunner().invoke(app, ["export", "modnas-b", "--onnx", "-o", str(notes)])
    assert result.exit_code != 0 and "is a file: give a .onnx file name or a folder" in result.output

    # --overwrite replaces it (the export itself, tested above, replaced by a stand-in)
    monkeypatch.setattr(onnx_export, "export_onnx", lambda module, path, **kw: path.write_bytes(b"graph") and path)
    report = types.SimpleNamespace(providers=["CPUExecutionProvider"], atol=1e-4, table=lambda: "",
                                   raise_on_failure=lambda: None)
    monkeypatch.setattr(onnx_export, "check_parity", lambda *args, **kwargs: report)
    result = CliRunner().invoke(app, ["export", "modnas-b", "--onnx", "-o", str(mine), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert mine.read_bytes() == b"graph"


def test_cli_export_needs_a_target():
    result = CliRunner().invoke(app, ["export", "modnas-b"])
    assert result.exit_code != 0 and "--onnx" in result.output


# --------------------------------------------------------------------------- HiNAS with DCN


def test_cli_export_run_folder_then_trt_without_tensorrt(hinas_cli):
    from restore.export.plugins.dcn_plugin import TRT_MISSING

    result, path = hinas_cli
    assert result.exit_code != 0 and result.output.count(TRT_MISSING) == 1
    assert path.is_file() and "dcn deformconv" in result.output  # the ONNX part was done
    rows = [line.split() for line in result.output.splitlines() if line.strip().endswith(("ok", "FAIL"))]
    assert len(rows) == 3 and all(r[-1] == "ok" for r in rows)


@pytest.mark.parametrize("mode", DCN_MODES)
def test_hinas_dcn_export(hinas_net, hinas_exports, real_image, mode):
    path = hinas_exports[mode]
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    ops = _op_types(path)
    if mode == "deformconv":
        assert "DeformConv" in ops and "GridSample" not in ops
    else:
        assert "DeformConv" not in ops and "GridSample" in ops
    meta = read_metadata(path)
    assert meta["dcn"] == mode and meta["model"] == "hinas-dcn-tiny"
    assert from_json(meta["genotype"]) == HINAS_DCN
    report = check_parity(hinas_net, path, parity_inputs(1, False, 1, real_image, seed=1))
    assert report.passed and report.max_abs_err <= 1e-4, report.table()


def test_ort_version_gate(hinas_exports, monkeypatch):
    monkeypatch.setattr(ort, "__version__", "1.20.0")
    assert default_dcn_mode() == "decomposed"
    with pytest.raises(RestoreError, match="--dcn decomposed"):
        OnnxRuntimeBackend(hinas_exports["deformconv"], device="cpu")
    OnnxRuntimeBackend(hinas_exports["decomposed"], device="cpu")  # no DeformConv: fine


def test_fp16_export(real_image, tmp_path):
    from restore.models.dcn import DeformConv2d

    torch.manual_seed(0)  # a minimal DCN net: the fp16 path is the same for any size
    net = _perturb(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), DeformConv2d(4, 4),
                                       torch.nn.Conv2d(4, 1, 3, padding=1)))
    path = export_onnx(net, tmp_path / "fp16.onnx", in_channels=1, fp16=True, metadata={})
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    float_type = onnx.TensorProto.FLOAT
    assert model.graph.input[0].type.tensor_type.elem_type == float_type
    assert model.graph.output[0].type.tensor_type.elem_type == float_type
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    assert read_metadata(model)["precision"] == "fp16"
    assert "DeformConv" in _op_types(path)
    report = check_parity(net, path, parity_inputs(1, False, 1, real_image), atol=FP16_ATOL)
    assert report.passed, report.table()
    assert report.max_abs_err > 0  # really ran in float16
    assert next(net.parameters()).dtype == torch.float32  # the caller's module is untouched


def test_denoise_cli_with_onnx_backend(hinas_run, hinas_exports, real_image, tmp_path):
    """`restore denoise --backend onnx` end to end: a run folder + its exported graph."""
    from PIL import Image

    run = hinas_run
    image = tmp_path / "noisy.png"
    Image.fromarray((real_image[:72, :96].mean(axis=2) * 255).round().astype(np.uint8)).save(image)
    outputs = {}
    for backend in ("onnx", "torch"):
        out = tmp_path / backend
        args = ["denoise", str(image), "-m", str(run), "-b", backend, "--device", "cpu", "-o", str(out)]
        if backend == "onnx":
            args += ["--onnx-file", str(hinas_exports["deformconv"])]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        (written,) = out.iterdir()
        outputs[backend] = np.asarray(Image.open(written), dtype=np.int16)
    assert np.abs(outputs["onnx"] - outputs["torch"]).max() <= 1  # 8-bit rounding at most


# --------------------------------------------------------------------------- σ-map model, in-memory export


def test_for_model_exports_in_memory_with_noise_map(real_image):
    from restore.models.modnas import ModNASSupernet, SearchSpaceConfig

    torch.manual_seed(0)
    cfg = SearchSpaceConfig(channels=8, levels=1, layers_per_block=1, stages=1, noise_map=True)
    net = build(ModNASSupernet(cfg).genotype(name="modnas-tiny-nm")).eval()
    entry = ModelEntry(name="modnas-tiny-nm", task="denoise", channels=1, noise_map=True)
    backend = OnnxRuntimeBackend.for_model(net, entry=entry, device="cpu")
    meta = backend.metadata
    assert meta["noise_map"] == "true" and meta["in_channels"] == "2" and meta["model"] == "modnas-tiny-nm"
    assert backend.providers == ["CPUExecutionProvider"]
    for x in parity_inputs(2, True, net.size_multiple, real_image):
        assert torch.all(x[:, -1] == x[0, -1, 0, 0])  # a constant σ map
        with torch.no_grad():
            want = net(x)
        assert float((backend(x) - want).abs().max()) <= 1e-4


# --------------------------------------------------------------------------- cheap argument checks


def test_refuses_old_opset_and_unknown_dcn_mode(hinas_net, tmp_path):
    with pytest.raises(RestoreError, match="opset 17"):
        export_onnx(hinas_net, tmp_path / "a.onnx", in_channels=1, opset=17)
    with pytest.raises(RestoreError, match="decomposed"):
        export_onnx(hinas_net, tmp_path / "a.onnx", in_channels=1, dcn="torchvision")
    assert not list(tmp_path.iterdir())


def test_user_onnx_with_wrong_channels_is_refused(hinas_net, hinas_exports):
    entry = ModelEntry(name="x", task="denoise", channels=3)
    with pytest.raises(RestoreError, match="3"):
        OnnxRuntimeBackend.for_model(hinas_net, entry=entry, device="cpu", onnx_path=hinas_exports["decomposed"])


def test_save_onnx_is_atomic_and_creates_folders(hinas_exports, tmp_path):
    model = onnx.load(str(hinas_exports["decomposed"]))
    target = tmp_path / "a" / "b" / "m.onnx"
    save_onnx(model, target)
    save_onnx(model, target)  # replacing works too
    assert [p.name for p in target.parent.iterdir()] == ["m.onnx"]  # no temporary leftovers
    assert json.loads(read_metadata(target)["genotype"])["space"] == "hinas"
