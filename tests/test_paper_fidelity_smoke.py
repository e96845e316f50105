"""Smoke run of every paper-fidelity experiment (benchmarks/paper_fidelity, issue #9).

Each script's `main(argv)` runs with `--smoke`: a few search/training steps on a few
tiny crops, tiny widths, its table and figure written into a temporary run folder. This
checks the plumbing (configs, Searcher/Trainer runs, resumable folders, reading
metrics.csv / arch_log.jsonl, tables, figures), not the numbers.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "benchmarks" / "paper_fidelity"
# exp1 runs the searches that exp2 and exp6 reuse, and the modnas-b training of exp3
# is reused by exp5 and exp6: the order keeps the total small
SCRIPTS = ["exp4_memory", "exp1_stability", "exp2_depth", "exp3_width", "exp5_loss", "exp6_search_vs_none"]
FIGURES = {"exp1_stability": "pf_exp1_stability", "exp2_depth": "pf_exp2_depth", "exp3_width": "pf_exp3_width",
           "exp4_memory": "pf_exp4_memory", "exp5_loss": "pf_exp5_loss", "exp6_search_vs_none": "pf_exp6_search_vs_none"}


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"paper_fidelity_{name}", FOLDER / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory, shared_dir):
    pytest.importorskip("matplotlib")
    old = torch.get_num_threads()
    runs = tmp_path_factory.mktemp("paper_fidelity")
    argv = ["--smoke", "--runs", str(runs), "--data", str(shared_dir / "data/train/Train400"),
            "--test", str(shared_dir / "data/test/Set12")]
    results, seconds = {}, {}
    try:
        for name in SCRIPTS:
            t0 = time.time()
            results[name] = load(name).main(argv)
            seconds[name] = time.time() - t0
    finally:
        torch.set_num_threads(old)
    return runs, results, seconds


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_writes_table_and_figure(smoke_runs, name):
    runs, results, _ = smoke_runs
    assert (runs / "tables" / f"{name}.md").read_text().count("|") > 10
    figure = runs / "figures" / f"{FIGURES[name]}.png"
    assert figure.stat().st_size > 5000
    assert results[name]


def test_numbers_are_read_back(smoke_runs):
    runs, results, _ = smoke_runs
    assert set(results["exp1_stability"]) == {"modnas-unfold-dense", "plain-dense", "modnas-unfold-dense-seed1",
                                              "plain-dense-seed1"}
    for summary in results["exp1_stability"].values():
        assert summary["last_step"] == 4 and summary["final_psnr"] > 0
    depth = results["exp2_depth"]["modnas-unfold-skip"]
    assert depth["max_depth"] == 6 and len(depth["depths"]) == len(depth["steps"]) > 0
    mem = json.loads((runs / "tables" / "exp4_memory.json").read_text())
    shared, separate = (next(r for r in mem["runs"] if r["variant"] == v) for v in ("shared", "separate"))
    assert shared["cells"] < separate["cells"] and shared["params"] < separate["params"]
    for key in ("searched", "modnas-b", "handmade"):
        assert results["exp6_search_vs_none"][key]["test"]["psnr"] > 0


def test_rerun_resumes_instead_of_retraining(smoke_runs, shared_dir):
    """A second invocation finds every arm finished and only re-reads and re-plots."""
    runs, _, seconds = smoke_runs
    argv = ["--smoke", "--runs", str(runs), "--data", str(shared_dir / "data/train/Train400"),
            "--test", str(shared_dir / "data/test/Set12")]
    before = (runs / "search" / "modnas-unfold-dense" / "metrics.csv").read_text()
    old = torch.get_num_threads()
    try:
        load("exp1_stability").main(argv)
    finally:
        torch.set_num_threads(old)
    assert (runs / "search" / "modnas-unfold-dense" / "metrics.csv").read_text() == before


def test_report_only_regenerates_from_saved_json(smoke_runs, shared_dir, tmp_path):
    """Tables and figures come back from the table JSON alone (as from docs/results/paper_fidelity/),
    without any run folder."""
    runs, _, _ = smoke_runs
    argv = ["--smoke", "--report-only", "--results", str(runs / "tables"), "--runs", str(tmp_path),
            "--data", str(shared_dir / "data/train/Train400"), "--test", str(shared_dir / "data/test/Set12")]
    old = torch.get_num_threads()
    try:
        for name in SCRIPTS:
            load(name).main(argv)
    finally:
        torch.set_num_threads(old)
    assert not (tmp_path / "search").exists() and not (tmp_path / "train").exists()
    for name in SCRIPTS:
        assert (tmp_path / "tables" / f"{name}.md").read_text() == (runs / "tables" / f"{name}.md").read_text()
        assert (tmp_path / "figures" / f"{FIGURES[name]}.png").stat().st_size > 5000


def test_handmade_unet_matches_table7_flops():
    from restore.models.build import build, load_preset
    from restore.models.genotype import load_genotype
    from restore.runtime.profile import count_flops

    hand = load_genotype(FOLDER / "handmade_unet.json")
    layers = [layer for block in hand.encoder + hand.decoder for layer in block.layers]
    assert {layer.op for layer in layers} == {"conv_3x3"} and len({layer.channels for layer in layers}) == 1
    x = torch.zeros(1, 1, 64, 64)
    ratio = count_flops(build(hand), x) / count_flops(build(load_preset("modnas-b")), x)
    assert 0.9 < ratio < 1.1
