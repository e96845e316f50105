"""The zoo benchmark scripts run end to end (tiny settings) and write what RESULTS.md cites."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_throughput_reports_ratios_against_dncnn():
    bench = _script("throughput")
    result = bench.run(["denoise-gray"], size=32, rounds=1, threads=1, precisions=["fp32"])
    rows = {r["model"]: r for r in result["rows"]}
    assert rows["DnCNN (peer)"]["speedup_vs_dncnn"] == pytest.approx(1.0)
    assert 1000 < rows["DnCNN (peer)"]["gflops_per_mp"] < 1200  # 17 layers × 64 channels, 3×3
    assert rows["denoise-gray"]["gflops_per_mp"] < rows["DnCNN (peer)"]["gflops_per_mp"]
    assert rows["denoise-gray"]["speedup_vs_dncnn"] > 0
    assert "| denoise-gray | fp32 |" in bench.markdown(result)


def test_throughput_times_each_precision_against_the_fp32_peer_and_its_own():
    bench = _script("throughput")
    result = bench.run(["denoise-gray"], size=32, rounds=1, threads=1, precisions=["fp32", "bf16"])
    rows = {r["model"]: r for r in result["rows"]}
    assert set(rows) == {"DnCNN (peer) [fp32]", "denoise-gray [fp32]", "DnCNN (peer) [bf16]", "denoise-gray [bf16]"}
    assert rows["DnCNN (peer) [fp32]"]["speedup_vs_dncnn"] == pytest.approx(1.0)
    assert rows["DnCNN (peer) [bf16]"]["speedup_vs_dncnn_same_precision"] == pytest.approx(1.0)
    assert rows["denoise-gray [bf16]"]["precision"] == "bf16"
    ratio = rows["DnCNN (peer) [fp32]"]["median_ms"] / rows["denoise-gray [bf16]"]["median_ms"]
    assert rows["denoise-gray [bf16]"]["speedup_vs_dncnn"] == pytest.approx(ratio)


def test_zoo_eval_writes_a_table_and_its_command(shared_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("RESTORE_SHARED", str(shared_dir))
    bench = _script("zoo_eval")
    bench.run_table("classic5-q20", 1, tmp_path)
    table = (tmp_path / "classic5-q20.md").read_text(encoding="utf-8")
    assert table.startswith("`restore eval ") and "-d jpeg:20" in table and "| deblock-gray |" in table
    result = json.loads((tmp_path / "classic5-q20.json").read_text(encoding="utf-8"))
    assert result["images"] == 1 and result["mean"]["deblock-gray"]["psnr"] > result["mean"]["input"]["psnr"]


def test_zoo_eval_tiled_table_names_its_path(shared_dir, monkeypatch):
    monkeypatch.setenv("RESTORE_SHARED", str(shared_dir))
    bench = _script("zoo_eval")
    assert "--tiled" in bench.command_line("rain100h-tiled", 2)
    assert "--tiled" not in bench.command_line("rain100h", 2)


def test_training_curves_plot_and_milestones(tmp_path):
    bench = _script("training_curves")
    run = tmp_path / "run"
    run.mkdir()
    rows = ["step,time,lr,loss,val_psnr,val_ssim"] + [f"{s},1,0.001,0.01,{20 + s / 100},0.5" if s % 100 == 0
                                                      else f"{s},1,0.001,0.01,," for s in range(25, 2025, 25)]
    (run / "metrics.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    val, loss = bench.read_metrics(run)
    assert len(val) == 20 and len(loss) == 80
    points = bench.milestones(val, 5)
    assert points[0] == (100, 21.0) and points[-1] == (2000, 40.0) and len(points) == 5
    bench.TRAINING = tmp_path
    bench.plot(["run"], tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    assert "| run | 2000 | 100: 21.00" in bench.markdown_rows(["run"])


def test_rain_statistics_table_and_figure(shared_dir, tmp_path, monkeypatch):
    bench = _script("rain_statistics")
    monkeypatch.setattr(bench, "SHARED", shared_dir)
    rows = bench.table(backgrounds=2, limit=2)
    assert list(rows) == ["Rain100H (rainy − clean)", *(f"`rain:{s}` over BSD200" for s in bench.STYLES)]
    assert all(len(v) == len(bench.COLUMNS) for v in rows.values())
    psnr = bench.AMOUNT.index("input PSNR (dB)")
    assert 8 < rows["Rain100H (rainy − clean)"][psnr] < 16  # input PSNR of heavy rain
    assert rows["`rain:light` over BSD200"][0] < rows["`rain:torrent` over BSD200"][0] / 3
    # streaks: neighbours across a streak correlate more than 8 px apart, along it more than across
    for v in rows.values():
        ac = dict(zip(bench.COLUMNS, v))
        assert ac["ac x 2"] > ac["ac x 8"] and ac["ac y 8"] > ac["ac x 8"]
        assert 0 <= ac["streak angle (°)"] <= 90
    text = bench.markdown(rows)
    assert "| `rain:torrent` over BSD200 | " in text and "| rain layer | std |" in text
    bench.figure(tmp_path / "rain.png", size=40)
    from PIL import Image

    assert Image.open(tmp_path / "rain.png").size == ((2 + len(bench.STYLES)) * 80, 80)


def test_dominant_angle_reads_the_streak_direction():
    bench = _script("rain_statistics")
    from restore.data.rain import line_kernel

    for angle in (0.0, 10.0, 30.0, -20.0):
        k = line_kernel(400, angle, 2.0)  # long: its tapered ends fall outside the crop
        cy, cx = k.shape[0] // 2, k.shape[1] // 2
        canvas = np.zeros((k.shape[0], k.shape[1] + 200), np.float32)  # a near-vertical k is narrow
        canvas[:, 100 : 100 + k.shape[1]] = k
        streak = canvas[cy - 50 : cy + 51, cx + 50 : cx + 151]
        assert abs(bench.dominant_angle(streak) - abs(angle)) < 1.0


def test_derain_errors_splits_the_error_into_bias_and_broad_parts(shared_dir, monkeypatch):
    bench = _script("derain_errors")
    rng = np.random.default_rng(0)
    clean = 0.1 + rng.random((40, 56, 3)).astype(np.float32) * 0.5  # offsets below stay inside [0, 1]
    rainy = clean + 0.2
    # a constant colour offset is all bias, and broad: both oracles take it away
    psnr, unbiased, unbroad, error, rain = bench.error_parts(clean + np.float32([0.05, 0.0, -0.05]), clean, rainy)
    assert psnr == pytest.approx(10 * np.log10(1 / (2 * 0.05**2 / 3)), abs=0.01)
    assert unbiased > 100 and unbroad > 60
    assert error == pytest.approx(0.0, abs=1e-6) and rain == pytest.approx(0.2, abs=1e-6)
    # pixel noise is neither: the oracles barely help
    noise = rng.normal(0, 0.05, clean.shape).astype(np.float32)
    psnr, unbiased, unbroad, *_ = bench.error_parts(clean + noise, clean, rainy)
    assert unbiased - psnr < 0.05 and unbroad - psnr < 0.3

    monkeypatch.setattr(bench, "SHARED", shared_dir)
    row = bench.score("derain", stride=50, limit=2)
    assert len(row) == len(bench.COLUMNS) and np.isfinite(row).all()
    assert 15 < row[0] <= row[1] and row[0] <= row[2]
    assert "| derain | " in bench.markdown({"derain": row})
