"""ONNX export of restore::deform_conv2d (DeformConv and decomposed), parity with ORT CPU."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from restore.errors import RestoreError  # noqa: E402
from restore.export.onnx_ops import custom_translation_table, deform_conv_translation  # noqa: E402
from restore.models.dcn import DeformConv2d  # noqa: E402

SIZES = [(1, 3, 32, 48), (2, 3, 40, 24)]


def _model() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), DeformConv2d(8, 8), nn.Conv2d(8, 3, 3, padding=1))
    # Non-zero predictor: offsets of a few pixels (many samples off-grid and off-image).
    nn.init.normal_(m[1].offset_mask.weight, std=0.3)
    nn.init.normal_(m[1].offset_mask.bias, std=0.5)
    return m.eval()


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return _model()


def _export(model, mode, path, opset=19):
    # Batch 2 in the example: a size-1 dim would be specialised by torch.export.
    dims = {0: torch.export.Dim("batch", max=64), 2: torch.export.Dim("h", min=2, max=4096),
            3: torch.export.Dim("w", min=2, max=4096)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.rand(2, 3, 16, 16),), str(path), dynamo=True, opset_version=opset,
                          custom_translation_table=custom_translation_table(mode, opset),
                          dynamic_shapes=(dims,), verbose=False)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    return proto


@pytest.mark.parametrize("mode, opset", [("deformconv", 19), ("decomposed", 19), ("decomposed", 20)])
def test_export_matches_torch_on_ort_cpu(model, mode, opset, tmp_path):
    proto = _export(model, mode, tmp_path / f"{mode}.onnx", opset)
    ops = [n.op_type for n in proto.graph.node]
    if mode == "deformconv":
        assert "DeformConv" in ops
    else:
        assert "DeformConv" not in ops and "GridSample" in ops
    sess = ort.InferenceSession(str(tmp_path / f"{mode}.onnx"), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for i, shape in enumerate(SIZES):
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(i))
        with torch.no_grad():
            want = model(x).numpy()
        got = sess.run(None, {name: x.numpy()})[0]
        assert got.shape == want.shape
        assert abs(got - want).max() <= 1e-4


def test_bad_mode_or_opset():
    with pytest.raises(RestoreError):
        deform_conv_translation("torchvision")
    with pytest.raises(RestoreError):
        deform_conv_translation("deformconv", opset_version=18)
