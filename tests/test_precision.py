"""bf16 autocast: chosen only where native, close to float32 in every output pixel, and
threaded through the restorer, tiling, eval, the CLI and training."""

import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import restore
from restore.cli import app
from restore.data import EvalSet
from restore.errors import RestoreError
from restore.metrics import psnr
from restore.runtime import precision as precision_mod
from restore.runtime.backends import TorchBackend
from restore.runtime.precision import autocast, native_bf16, resolve_precision
from restore.runtime.tiling import TileConfig, restore_tensor
from restore.train.trainer import Trainer

from test_train import tiny_config


@pytest.mark.parametrize("native, picked", [(True, "bf16"), (False, "fp32")])
def test_auto_takes_bf16_only_where_native(monkeypatch, native, picked):
    monkeypatch.setattr(precision_mod, "native_bf16", lambda device="cpu": native)
    assert resolve_precision("auto") == picked
    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"  # explicit choices stand


def test_a_torch_without_the_cpu_probes_gets_fp32(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert native_bf16("cpu") is False
    assert resolve_precision("auto", "cpu") == "fp32"


def test_unknown_precision_is_refused():
    with pytest.raises(RestoreError, match="unknown precision 'fp16'"):
        resolve_precision("fp16")
    with pytest.raises(RestoreError, match="resolved"):
        autocast("auto")


def test_load_refuses_an_unknown_precision_for_any_backend():
    for backend in ("torch", "onnx"):
        with pytest.raises(RestoreError, match="unknown precision 'fp16'"):
            restore.load("denoise-gray", backend=backend, precision="fp16")
    with pytest.raises(RestoreError, match="only applies to --backend torch"):
        restore.load("denoise-gray", backend="onnx", precision="bf16")


def test_bf16_autocast_runs_convolutions_in_bf16():
    conv = torch.nn.Conv2d(1, 4, 3)
    with torch.inference_mode():
        assert conv(torch.rand(1, 1, 8, 8)).dtype == torch.float32
        with autocast("bf16"):
            assert conv(torch.rand(1, 1, 8, 8)).dtype == torch.bfloat16


@pytest.fixture(scope="module")
def set12_crops(shared_dir):
    """Three Set12 images at σ = 25 (benchmark noise), cropped to 128² to keep the test short."""
    crops = []
    for _, noisy, clean in list(EvalSet(shared_dir / "data/test/Set12", "awgn:25", channels=1))[:3]:
        crops.append((noisy[:128, :128], clean[:128, :128]))
    return crops


def test_bf16_denoiser_matches_fp32(set12_crops):
    """The shipped denoiser in bf16 stays within 2/255 of float32 in every pixel and within
    0.02 dB in PSNR (measured: 0.003 dB on the whole of Set12)."""
    fast, exact = restore.load("denoise-gray", precision="bf16"), restore.load("denoise-gray", precision="fp32")
    assert "bf16" in fast.backend.describe() and "bf16" not in exact.backend.describe()
    for noisy, clean in set12_crops:
        a, b = exact(noisy, sigma=25), fast(noisy, sigma=25)
        assert b.dtype == np.float32
        assert np.abs(a - b).max() <= 2 / 255
        assert abs(psnr(a, clean, data_range=1.0) - psnr(b, clean, data_range=1.0)) < 0.02
        assert psnr(b, clean, data_range=1.0) > psnr(noisy, clean, data_range=1.0) + 8  # still a denoiser


def test_bf16_tiling_adds_no_error_of_its_own(set12_crops):
    """Tiles are blended in float32 whatever the network ran in: in bf16 the tiled output
    stays within 2/255 of float32's, and as close to the whole image as in float32 (this
    U-Net sees beyond the 16-px overlap, so neither is exact: ≈ 62 dB in float32)."""
    noisy = torch.from_numpy(set12_crops[0][0].transpose(2, 0, 1)).unsqueeze(0)
    x = torch.cat([noisy, torch.full_like(noisy, 25 / 255)], dim=1)
    out = {}
    for precision in ("fp32", "bf16"):
        net, _ = restore.restorer.network_for("denoise-gray")
        backend = TorchBackend(net, device="cpu", precision=precision)
        out[precision] = [restore_tensor(backend, x, config=TileConfig(tile=tile, overlap=16), size_multiple=8,
                                         out_channels=1) for tile in (None, 64)]
    whole, tiled = out["bf16"]
    assert tiled.dtype == torch.float32
    assert (tiled - out["fp32"][1]).abs().max() <= 2 / 255
    seam_psnr = {p: 10 * math.log10(1 / float(((t - w) ** 2).mean())) for p, (w, t) in out.items()}
    assert seam_psnr["bf16"] > 55 and seam_psnr["bf16"] > seam_psnr["fp32"] - 4, seam_psnr


def test_training_in_bf16_learns(tiny_genotype, tiny_train_dir, tmp_path):
    cfg = tiny_config(tiny_genotype, tiny_train_dir, steps=40, val_every=40, ema=0.0, precision="bf16")
    trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    assert trainer.precision == "bf16"
    before, _ = trainer.evaluate(trainer.model)
    summary = trainer.fit()
    assert summary["best_val_psnr"] > before + 0.5
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # the weights stay fp32
    assert "bf16" in (tmp_path / "run" / "log.txt").read_text()
    with pytest.raises(RestoreError, match="precision must be auto, fp32 or bf16"):
        tiny_config(tiny_genotype, tiny_train_dir, precision="fp16")


@pytest.mark.parametrize("args, text", [
    (["denoise", "x.png", "--precision", "fp16"], "unknown --precision 'fp16'"),
    (["denoise", "x.png", "--precision", "bf16", "--backend", "onnx"], "only applies to --backend torch"),
    (["bench", "--precision", "half"], "unknown --precision 'half'"),
    (["app", "--precision", "fp16"], "unknown --precision 'fp16'"),
    (["app", "--precision", "bf16", "--backend", "onnx"], "only applies to --backend torch"),
])
def test_cli_refuses_bad_precision_in_one_line(args, text):
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    out = result.output.strip()
    assert text in out and "Traceback" not in out and len(out.splitlines()) == 1, out


def test_eval_scores_fp32_unless_asked(shared_dir, tmp_path):
    folder = shared_dir / "data/test/Set12"
    runner = CliRunner()
    rows = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.json"
        result = runner.invoke(app, ["eval", str(folder), "--limit", "1", "-m", "denoise-gray", "--precision", precision,
                                     "--json", str(out)])
        assert result.exit_code == 0, result.output
        rows[precision] = out.read_text()
    assert rows["fp32"] != rows["bf16"]  # the option reaches the network


def test_app_catalog_loads_at_its_precision():
    from restore.app.handlers import ZooCatalog
    from restore.zoo.registry import get_entry

    entry = get_entry("denoise-gray")
    for precision in ("fp32", "bf16"):
        restorer = ZooCatalog(precision).load(entry, backend="torch", device="cpu", tile=TileConfig())
        assert restorer.backend.precision == precision
