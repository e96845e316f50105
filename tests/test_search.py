"""Architecture search: splits, warm-up, end-to-end tiny searches, exact resume, 2 processes, CLI."""

from __future__ import annotations

import os
import re
import shutil
import socket
import warnings

import pytest
import torch

from restore.errors import RestoreError
from restore.models.build import build
from restore.models.genotype import load_genotype
from restore.search import Searcher, list_presets, make_config, search, split_images
from restore.train.checkpoint import load_state


@pytest.fixture(scope="module")
def few_images(shared_dir, tmp_path_factory):
    """12 Train400 images: V gets 1, W 6, A 5."""
    src = sorted((shared_dir / "data" / "train" / "Train400").glob("*.png"))[:12]
    folder = tmp_path_factory.mktemp("few")
    for p in src:
        shutil.copy(p, folder / p.name)
    return folder


def tiny(space: str, data, **kw):
    # one thread: these nets are far too small to gain from more, and the CPU is shared
    # the CPU: the exactness tests hold there (the GPU path is tested in test_train)
    return make_config(f"tiny-{space}", train_dirs=[str(data)], **{"threads": 1, "device": "cpu", **kw})


@pytest.fixture(autouse=True)
def _keep_threads():
    """Searcher sets torch's thread count process-wide; give other tests theirs back."""
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def modnas_run(few_images, tmp_path_factory):
    """One uninterrupted tiny MoD-NAS search, the reference of several tests."""
    old = torch.get_num_threads()
    run = tmp_path_factory.mktemp("modnas-full")
    summary = search(tiny("modnas", few_images), run, show_progress=False)
    torch.set_num_threads(old)
    return run, summary


def arch_state(state: dict) -> dict:
    return {k: v for k, v in state["model"].items() if k.split(".")[0] in ("alpha", "beta", "gamma", "delta_logit")}


# ------------------------------------------------------------------------------- config


def test_presets_load():
    names = list_presets()
    for name in ("paper-modnas", "paper-hinas", "paper-hinas-derain", "cpu-modnas", "cpu-hinas", "tiny-modnas", "tiny-hinas"):
        assert name in names
        cfg = make_config(name)
        assert cfg.notes and cfg.warmup_steps < cfg.steps
    assert make_config("paper-hinas").weight_optimizer == "sgd"
    assert make_config("paper-modnas").arch_lr_min == 1e-5


def test_bad_config_raises(tmp_path, few_images):
    with pytest.raises(RestoreError, match="unknown key"):
        make_config("tiny-modnas", bogus=1)
    bad = tmp_path / "bad.json"
    bad.write_text('{"space": "modnas", "stepz": 3}')
    with pytest.raises(RestoreError, match="stepz"):
        make_config(None, bad)
    with pytest.raises(RestoreError, match="unknown search preset"):
        make_config("nope")
    with pytest.raises(RestoreError, match="beta_l1"):
        make_config("tiny-hinas", beta_l1=0.1)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RestoreError, match="no images"):
        Searcher(tiny("modnas", empty), tmp_path / "r1", show_progress=False)
    with pytest.raises(RestoreError, match="patch"):
        Searcher(tiny("modnas", few_images, patch=512), tmp_path / "r2", show_progress=False)


def test_splits_disjoint(few_images, shared_dir):
    s = split_images(tiny("modnas", few_images))
    w, a, v = set(s.train_w), set(s.train_a), set(s.val)
    assert not (w & a or w & v or a & v)
    assert len(w | a | v) == 12 and len(v) == 1
    full = split_images(tiny("hinas", shared_dir / "data" / "train" / "Train400"))
    assert len(full.val) == 8 and abs(len(full.train_w) - len(full.train_a)) <= 1  # IR-NAS: 2 %, rest halved


# ------------------------------------------------------------------------------- search


def test_arch_updates_only_after_warmup(tmp_path, few_images):
    s = Searcher(tiny("modnas", few_images), tmp_path, show_progress=False)
    assert s.cfg.warmup_steps == 3
    arch0 = [p.detach().clone() for p in s.arch]
    weights0 = [p.detach().clone() for p in s.weights]
    for _ in range(3):
        s.train_step()
    assert all(torch.equal(a, p) for a, p in zip(arch0, s.arch))
    assert any(not torch.equal(w, p) for w, p in zip(weights0, s.weights))
    s.train_step()
    assert any(not torch.equal(a, p) for a, p in zip(arch0, s.arch))


def check_search_outputs(run, summary, space: str, evaluations: int) -> None:
    assert summary["finished"] and summary["best_step"] == 6
    for name in ("genotype.json", "final_genotype.json", "best_genotype.json", "best_supernet.safetensors",
                 "arch_log.jsonl", "metrics.csv", "checkpoint.safetensors", "config.json"):
        assert (run / name).exists(), name
    g = load_genotype(run / "genotype.json")
    assert g.space == space
    net = build(g).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 1, 32, 32)).shape == (1, 1, 32, 32)
    log = (run / "arch_log.jsonl").read_text().splitlines()
    assert len(log) == evaluations and '"genotype"' in log[-1] and '"alpha"' in log[-1]


def test_modnas_search_end_to_end(modnas_run):
    run, summary = modnas_run
    check_search_outputs(run, summary, "modnas", evaluations=2)
    assert '"delta"' in (run / "arch_log.jsonl").read_text()


def test_hinas_search_end_to_end(tmp_path, few_images):
    summary = search(tiny("hinas", few_images), tmp_path, show_progress=False)
    check_search_outputs(tmp_path, summary, "hinas", evaluations=1)


def test_unreadable_images_are_reported_and_progress_is_logged(tmp_path, few_images):
    """The skipped images are named once at the start; each log line carries progress and ETA."""
    data = tmp_path / "data"
    shutil.copytree(few_images, data)
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # named once by the run's log, not warned per image
        s = Searcher(tiny("modnas", data), tmp_path / "run", show_progress=False)
    assert [p.name for p in s.data_w.unreadable + s.data_a.unreadable + s.val_unreadable] == ["broken.png"]
    s.fit(stop_at=2)
    log = (tmp_path / "run" / "log.txt").read_text()
    assert log.count("skipped 1 unreadable image(s): broken.png\n") == 1
    assert re.search(r" step 1/6 \(16\.7%\) time=\S+ lr=\S+ loss=\S+ eta \d+s\n", log), log
    assert re.search(r" step 2/6 \(33\.3%\) .* eta \d+s\n", log), log


def test_resume_after_kill_matches_uninterrupted(tmp_path, few_images, modnas_run):
    cfg, (full_run, _) = tiny("modnas", few_images), modnas_run

    run = tmp_path / "killed"
    search(cfg, run, show_progress=False, stop_at=4)
    saved = (run / "checkpoint.safetensors").read_bytes()
    search(cfg, run, show_progress=False, stop_at=5)  # step 5 logged, then "killed" before its checkpoint
    (run / "checkpoint.safetensors").write_bytes(saved)

    s = Searcher(cfg, run, show_progress=False)
    summary = s.fit()
    assert summary["finished"]
    full, resumed = load_state(full_run / "checkpoint.safetensors"), load_state(run / "checkpoint.safetensors")
    for k, v in full["model"].items():
        assert torch.allclose(v, resumed["model"][k], atol=1e-6), k
    assert full["best"] == resumed["best"]
    steps = [line.split(",")[0] for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == ["1", "2", "3", "4", "5", "6"]  # the replayed step is not logged twice
    text_steps = re.findall(r"^\S+ \S+ step (\d+)/6 ", (run / "log.txt").read_text(), flags=re.M)
    assert text_steps == steps  # log.txt too (the same truncation as the trainer's)
    assert (run / "genotype.json").read_text() == (full_run / "genotype.json").read_text()


# ------------------------------------------------------------------------------- two processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world: int, port: int, cfg, run) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    search(cfg, run, show_progress=False)
    assert not dist.is_initialized(), "search() leaves the process group closed"


def test_two_processes_match_one(tmp_path, few_images, modnas_run):
    """Each process takes one of the 2 items of the global batch; gradients are averaged."""
    # fork: the children inherit the imported torch (spawn re-imports it, ~10 s on a busy
    # 2-core box); safe because they run single-threaded (threads=1), like DataLoader workers
    torch.multiprocessing.start_processes(_worker, args=(2, _free_port(), tiny("modnas", few_images), tmp_path / "two"),
                                          nprocs=2, join=True, start_method="fork")
    assert "2 process(es)" in (tmp_path / "two" / "log.txt").read_text(), "the 2-process group did not form"
    one = load_state(modnas_run[0] / "checkpoint.safetensors")
    two = load_state(tmp_path / "two" / "checkpoint.safetensors")
    assert one["step"] == two["step"] == 6
    arch = arch_state(one)
    assert arch and len(one["model"]) > len(arch) and one["model"].keys() == two["model"].keys()
    for k, v in one["model"].items():  # α/β/γ/δ and every network weight: equal up to float noise (~1e-7 here)
        diff = (v.double() - two["model"][k].double()).abs().max().item() if v.numel() else 0.0
        assert torch.allclose(v, two["model"][k], rtol=1e-4, atol=1e-5), f"{k} differs by {diff:.2e}"
    assert one["best"]["step"] == two["best"]["step"]


# ------------------------------------------------------------------------------- CLI


def test_cli_search(tmp_path, few_images):
    from typer.testing import CliRunner

    from restore.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["search", "--preset", "tiny-modnas", "--data", str(few_images),
                                 "--run", str(tmp_path / "run"), "--threads", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "genotype.json").exists()
    assert "genotype.json" in result.output and "MoD-NAS" in result.output

    result = runner.invoke(app, ["search", "--preset", "tiny-modnas", "--run", str(tmp_path / "nodata")])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "--data" in lines[0]


def test_describe_warns_when_depth_search_removed_every_normal_layer():
    from dataclasses import replace

    from restore.models.build import load_preset
    from restore.models.genotype import Block, Layer
    from restore.search.searcher import describe

    g = load_preset("modnas-b")
    assert "warning" not in describe(g, 1000)

    def skipped(b: Block) -> Block:
        return replace(b, layers=tuple(Layer("skip", x.channels, 0) for x in b.layers))

    collapsed = replace(g, encoder=tuple(map(skipped, g.encoder)), decoder=tuple(map(skipped, g.decoder)))
    assert "0/" in describe(collapsed, 1000) and "warning" in describe(collapsed, 1000)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error of a machine without a CUDA GPU")
def test_searching_on_a_missing_gpu_is_refused_before_anything_is_written(tiny_train_dir, tmp_path):
    with pytest.raises(RestoreError, match="no CUDA GPU is available"):
        Searcher(tiny("modnas", tiny_train_dir, device="cuda"), tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run").exists()
