"""Shared plumbing of the paper-fidelity experiments (issue #9).

Every experiment script builds SearchConfig / TrainConfig objects, runs them with the
package's own Searcher / Trainer (resumable run folders: re-running a script continues
where it stopped and skips what is finished), then reads metrics.csv / arch_log.jsonl,
writes a Markdown table and a matplotlib figure.

Run folders: runs/paper_fidelity/ (gitignored; ``--smoke`` uses runs/paper_fidelity/smoke/).
Figures: docs/figures/ (``--smoke`` writes them into the smoke run folder instead).
Tables: <runs>/tables/<exp>.md and <exp>.json; ``--publish`` also writes them to
docs/results/paper_fidelity/ (committed). The JSON holds everything the table and the figure
are drawn from (curves included), so ``--report-only`` regenerates both without the run
folders: it reads docs/results/paper_fidelity/<exp>.json when <runs> has no runs (or the
folder given by ``--results``).
Runs shared between experiments (the MoD-NAS search of exp 1 is the dense-depth arm of
exp 2 and the searched genotype of exp 6; the modnas-b MSE training serves exps 3, 5, 6)
live under the same names, so whichever script runs first does the work once.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(REPO) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))


def shared_dir() -> Path:
    env = os.environ.get("RESTORE_SHARED")
    if env:
        return Path(env)
    for cand in (REPO.parent / "shared", REPO.parent.parent / "shared"):
        if cand.is_dir():
            return cand
    return REPO.parent / "shared"


SHARED = shared_dir()
RESULTS = REPO / "docs" / "results" / "paper_fidelity"
TRAIN400 = SHARED / "data/train/Train400"
SET12 = SHARED / "data/test/Set12"

# --------------------------------------------------------------------------- CPU budget
# One place for the budget of every search and training arm (see docs/RESULTS.md §6).
# Measured on the 2-core dev machine with both cores already busy: a C=8, 2-level, T=2
# supernet step (batch 4 of 32×32) takes ≈0.6 s forward+backward; modnas-b (T=1) ≈0.5 s
# per training step at batch 8 of 40×40.

SEARCH_BUDGET = dict(
    space="modnas", degradation="awgn:25", channels=1,
    val_images=3, patch=32, batch=4, steps=240, warmup_fraction=40 / 140,
    eval_every=12, checkpoint_every=24, log_every=12, loss="mse",
    beta_l1=0.5, weight_optimizer="adam", lr=1e-3, lr_min=1e-5, arch_lr=3e-3, arch_lr_min=3e-5,
    modnas_channels=8, levels=2, layers_per_block=3, stages=2, unfold=True, depth="dense",
)
SEARCH_SMOKE = dict(
    SEARCH_BUDGET, val_images=1, patch=16, batch=2, steps=4, warmup_fraction=0.5, eval_every=2,
    checkpoint_every=2, log_every=2, modnas_channels=4, levels=1, layers_per_block=2,
)
TRAIN_BUDGET = dict(
    channels=1, degradation="awgn:25", val_holdout=8, val_images=8, patch=40, batch=8, steps=200,
    lr=1e-3, lr_min=1e-5, loss="mse", ema=0.999, val_every=25, checkpoint_every=25, log_every=25,
    stages=1,
)
TRAIN_SMOKE = dict(TRAIN_BUDGET, val_holdout=2, val_images=1, patch=16, batch=2, steps=2, val_every=2,
                   checkpoint_every=2, log_every=1)
TEST_SETTING = "awgn:25"  # Set12, DnCNN protocol (numpy seed 0 per image)


# --------------------------------------------------------------------------- arguments


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true", help="seconds-long CI mode: a few steps on a few tiny images")
    p.add_argument("--runs", type=Path, default=None, help="run folders (default runs/paper_fidelity[/smoke])")
    p.add_argument("--figures", type=Path, default=None, help="figure folder (default docs/figures; smoke: the run folder)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    p.add_argument("--data", type=Path, default=TRAIN400, help="training images (default Train400)")
    p.add_argument("--test", type=Path, default=SET12, help="test images (default Set12)")
    p.add_argument("--report-only", action="store_true",
                   help="do not run anything: table + figure from the run folders if there are any, "
                        f"else from the saved JSON in {RESULTS.relative_to(REPO)}/")
    p.add_argument("--results", type=Path, default=None,
                   help="with --report-only: read <exp>.json from this folder, never the run folders")
    p.add_argument("--publish", action="store_true",
                   help=f"also write the table (.md) and its data (.json) to {RESULTS.relative_to(REPO)}/")
    return p


class Ctx:
    """Resolved paths and budgets of one script invocation."""

    def __init__(self, args: argparse.Namespace, name: str):
        self.args, self.name, self.smoke = args, name, args.smoke
        base = REPO / "runs" / "paper_fidelity"
        self.runs = args.runs or (base / "smoke" if args.smoke else base)
        self.runs.mkdir(parents=True, exist_ok=True)
        self.figures = args.figures or (self.runs / "figures" if args.smoke else REPO / "docs" / "figures")
        self.figures.mkdir(parents=True, exist_ok=True)
        self.tables = self.runs / "tables"
        self.tables.mkdir(parents=True, exist_ok=True)
        self.threads = args.threads
        self.saved = self._saved_data()
        self.search_budget = dict(SEARCH_SMOKE if args.smoke else SEARCH_BUDGET)
        self.train_budget = dict(TRAIN_SMOKE if args.smoke else TRAIN_BUDGET)
        if args.smoke:
            self.data = smoke_images(self.runs / "data" / "train", args.data, 12, 40)
            self.test = smoke_images(self.runs / "data" / "test", args.test, 2, 32)
        else:
            self.data, self.test = args.data, args.test
        import torch

        torch.set_num_threads(self.threads)

    def _saved_data(self) -> dict | None:
        """The saved table data to report from (``--report-only`` without run folders, or
        ``--results``); None when the runs are to be run or read."""
        a = self.args
        if not a.report_only:
            return None
        # local results: run folders (exps 1-3, 5, 6); exp 4's measurements live in its table JSON
        local = ((self.runs / "search").is_dir() or (self.runs / "train").is_dir()
                 or (self.name == "exp4_memory" and (self.tables / f"{self.name}.json").exists()))
        if a.results is None and local:
            return None
        folder = a.results or RESULTS
        path = folder / f"{self.name}.json"
        if not path.exists():
            raise SystemExit(f"[{self.name}] --report-only: no run folders under {self.runs} and no {path}")
        print(f"[{self.name}] report from {path}", flush=True)
        return json.loads(path.read_text(encoding="utf-8"))


def code_commit(ctx: Ctx) -> str | None:
    """The commit the runs were made with: <runs>/code_commit.txt (written by whoever runs
    them from a snapshot), else this checkout's HEAD (+ "-dirty" if restore/ has changes)."""
    note = ctx.runs / "code_commit.txt"
    if note.exists():
        return note.read_text().strip()
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "restore"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")


def meta(ctx: Ctx) -> dict:
    """Provenance stored with every table's data."""
    return {"search_budget": ctx.search_budget, "train_budget": ctx.train_budget, "test": ctx.test.name,
            "threads": ctx.threads, "smoke": ctx.smoke, "commit": code_commit(ctx),
            "written": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def smoke_images(folder: Path, source: Path, count: int, size: int) -> Path:
    """`count` centre crops (size×size) of the first images of `source`: tiny CI data."""
    if folder.is_dir() and len(list(folder.glob("*.png"))) >= count:
        return folder
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for src in sorted(source.glob("*.png"))[:count]:
        im = Image.open(src)
        w, h = im.size
        left, top = (w - size) // 2, (h - size) // 2
        im.crop((left, top, left + size, top + size)).save(folder / src.name)
    return folder


# --------------------------------------------------------------------------- runs


def run_search(ctx: Ctx, name: str, **overrides) -> Path:
    """Run (or resume, or skip if finished) one search arm; returns its run folder."""
    from restore.search import Searcher, make_config

    run = ctx.runs / "search" / name
    cfg = make_config(None, train_dirs=[str(ctx.data)], threads=ctx.threads, **{**ctx.search_budget, **overrides})
    if _finished(run, cfg.steps, "genotype.json") or ctx.args.report_only:
        return run
    t0 = time.time()
    summary = Searcher(cfg, run, show_progress=False).fit()
    _note_time(run, time.time() - t0)
    print(f"[{ctx.name}] search {name}: {summary.get('description', summary)}", flush=True)
    return run


def run_train(ctx: Ctx, name: str, model: str | Path, **overrides) -> Path:
    """Train (or resume, or skip if finished) one derived network; returns its run folder."""
    from restore.config import config_from_dict
    from restore.train.config import TrainConfig
    from restore.train.trainer import Trainer

    run = ctx.runs / "train" / name
    data = {**ctx.train_budget, **overrides, "model": str(model), "train_dirs": [str(ctx.data)], "threads": ctx.threads}
    cfg = config_from_dict(TrainConfig, data, where=f"train {name}")
    if _finished(run, cfg.steps, "last.safetensors") or ctx.args.report_only:
        return run
    t0 = time.time()
    summary = Trainer(cfg, run, show_progress=False).fit()
    _note_time(run, time.time() - t0)
    print(f"[{ctx.name}] train {name}: {summary}", flush=True)
    return run


def _finished(run: Path, steps: int, output: str) -> bool:
    rows = read_csv(run / "metrics.csv")
    return bool(rows) and int(rows[-1]["step"]) >= steps and (run / output).exists()


def _note_time(run: Path, seconds: float) -> None:
    """Wall-clock seconds spent by this process on the run (summed over resumes)."""
    path = run / "wall_seconds.txt"
    before = float(path.read_text()) if path.exists() else 0.0
    path.write_text(f"{before + seconds:.1f}\n")


def wall_seconds(run: Path) -> float | None:
    path = run / "wall_seconds.txt"
    return float(path.read_text()) if path.exists() else None


# --------------------------------------------------------------------------- reading runs


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in rows:
        if r.get(key) not in (None, ""):
            xs.append(int(r["step"]))
            ys.append(float(r[key]))
    return xs, ys


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a half-written last line
    return out


def search_done(run: Path) -> bool:
    return (run / "genotype.json").exists()


def weights_of(run: Path) -> Path | None:
    """The trained (EMA) weights at the end of a finished training run."""
    path = run / "last.safetensors"
    return path if path.exists() else None


# --------------------------------------------------------------------------- evaluation


def load_trained(run: Path):
    from safetensors.torch import load_file

    from restore.models.build import build
    from restore.models.genotype import load_genotype

    model = build(load_genotype(run / "genotype.json"))
    model.load_state_dict(load_file(str(run / "last.safetensors")))
    return model.eval()


def evaluate_run(ctx: Ctx, run: Path) -> dict | None:
    """Mean PSNR/SSIM of a finished training run's final (EMA) weights on the test folder
    (cached in the run folder as test_<folder>.json)."""
    if weights_of(run) is None:
        return None
    cache = run / f"test_{ctx.test.name}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    import numpy as np
    import torch

    from restore.data import EvalSet
    from restore.metrics import psnr, ssim
    from restore.runtime.tiling import TileConfig, restore_tensor

    model = load_trained(run)
    scores = []
    for _, degraded, clean in EvalSet(ctx.test, TEST_SETTING, 1):
        x = torch.from_numpy(degraded.transpose(2, 0, 1)).unsqueeze(0)
        out = restore_tensor(model, x, config=TileConfig(tile=None), size_multiple=getattr(model, "size_multiple", 1),
                             out_channels=1)
        pred = out[0].clamp(0, 1).numpy().transpose(1, 2, 0)
        scores.append((psnr(pred, clean, data_range=1.0), ssim(pred, clean, data_range=1.0)))
    result = {"test": ctx.test.name, "setting": TEST_SETTING, "images": len(scores),
              "psnr": float(np.mean([s[0] for s in scores])), "ssim": float(np.mean([s[1] for s in scores]))}
    cache.write_text(json.dumps(result, indent=1) + "\n")
    return result


def cost(genotype, size: int = 256, stages: int | None = TRAIN_BUDGET["stages"]) -> dict:
    """Parameters and FLOPs (FlopCounterMode, 2 per MAC) of one forward on a 1×1×size×size input,
    at the T the networks are trained with (`stages`; None keeps the genotype's)."""
    import torch

    if stages is not None:
        genotype = replace(genotype, stages=stages)

    from restore.models.build import build
    from restore.runtime.profile import count_flops, count_parameters

    model = build(genotype).eval()
    x = torch.zeros(1, genotype.in_channels + int(genotype.noise_map), size, size)
    return {"params": count_parameters(model), "gflops": count_flops(model, x) / 1e9, "size": size}


# --------------------------------------------------------------------------- genotypes


def uniform_width(g, width: int):
    """The same MoD-NAS genotype with every searched width (head, layers, samplers) at `width`;
    fusion convs follow the derivation rule (half the concat width = `width`)."""
    from restore.models.genotype import Block
    from restore.models.modnas import _assign_fusion_widths

    def layer(l):
        return l if l.op == "skip" else replace(l, channels=width)

    def block(b):
        return Block(layers=tuple(layer(l) for l in b.layers),
                     sample=None if b.sample is None else replace(b.sample, channels=width),
                     fuse_channels=b.fuse_channels)

    g = replace(g, head_channels=width, encoder=tuple(block(b) for b in g.encoder),
                decoder=tuple(block(b) for b in g.decoder), name=f"{g.name}-c{width}")
    return _assign_fusion_widths(g)


def layer_widths(g) -> list[tuple[str, int]]:
    """(label, output width) of every conv-bearing layer of a MoD-NAS genotype, forward order
    (removed layers omitted)."""
    out = [("head", g.head_channels)]
    for b, block in enumerate(g.encoder):
        out += [(f"e{b}.{i}", l.channels) for i, l in enumerate(block.layers) if l.op != "skip"]
        out.append((f"e{b}.dn", block.sample.channels))
    for b, block in enumerate(g.decoder):
        if block.fuse_channels is not None:
            out.append((f"d{b}.fu", block.fuse_channels))
        out += [(f"d{b}.{i}", l.channels) for i, l in enumerate(block.layers) if l.op != "skip"]
        if block.sample is not None:
            out.append((f"d{b}.up", block.sample.channels))
    return out


def depth(g) -> int:
    """Normal layers kept in one U-Net (removed / skip layers do not count)."""
    return sum(1 for b in tuple(g.encoder) + tuple(g.decoder) for l in b.layers if l.op != "skip")


def max_depth(g) -> int:
    return sum(len(b.layers) for b in tuple(g.encoder) + tuple(g.decoder))


# --------------------------------------------------------------------------- output


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def fmt(v):
        if v is None:
            return "not run yet"
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 1 else f"{v:.2f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_table(ctx: Ctx, text: str, data: dict | None = None) -> Path:
    folders = [ctx.tables] + ([RESULTS] if ctx.args.publish else [])
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{ctx.name}.md"
        path.write_text(text + "\n", encoding="utf-8")
        if data is not None:
            (folder / f"{ctx.name}.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    path = ctx.tables / f"{ctx.name}.md"
    print(text, flush=True)
    print(f"[{ctx.name}] table → {path}", flush=True)
    return path


def figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9})
    return plt


def save_figure(ctx: Ctx, fig, stem: str) -> Path:
    path = ctx.figures / f"{stem}.png"
    fig.tight_layout()
    fig.savefig(path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    print(f"[{ctx.name}] figure → {path}", flush=True)
    return path


# --------------------------------------------------------------------------- shared arms
# (name → overrides); the names are run-folder names shared by the experiments.

SEARCH_ARMS = {
    "modnas-unfold-dense": dict(unfold=True, stages=2, depth="dense"),  # MoD-NAS as in the paper (T=2, γ)
    "plain-dense": dict(unfold=False, stages=1, depth="dense"),  # plain DARTS on the same U-Net space
    "modnas-unfold-skip": dict(unfold=True, stages=2, depth="skip"),  # skip among the candidates, no γ
    # seed repeats for exp 1 (the seed re-draws the initialisation and the Train W / A / V split)
    "plain-dense-seed1": dict(unfold=False, stages=1, depth="dense", seed=1),
    "modnas-unfold-dense-seed1": dict(unfold=True, stages=2, depth="dense", seed=1),
}


def search_arm(ctx: Ctx, name: str) -> Path:
    return run_search(ctx, name, **SEARCH_ARMS[name])


def search_summary(run: Path, warmup: int) -> dict:
    """Numbers of one search run's Train V PSNR curve (after warm-up = once α/β/γ/δ train)."""
    rows = read_csv(run / "metrics.csv")
    steps, psnrs = series(rows, "val_psnr")
    if not steps:
        return {}
    after = [(s, p) for s, p in zip(steps, psnrs) if s >= warmup]
    out = {"evals": len(steps), "last_step": steps[-1], "final_psnr": psnrs[-1]}
    at_warmup = [p for s, p in zip(steps, psnrs) if s <= warmup]
    out["warmup_psnr"] = at_warmup[-1] if at_warmup else None
    if after:
        best_step, best = max(after, key=lambda sp: sp[1])
        diffs = [b[1] - a[1] for a, b in zip(after, after[1:])]
        out.update(best_psnr=best, best_step=best_step, drop_from_best=psnrs[-1] - best,
                   worst_fall=min(diffs) if diffs else 0.0,
                   roughness=(sum(d * d for d in diffs) / len(diffs)) ** 0.5 if diffs else 0.0)
    return out


def arch_depths(run: Path) -> tuple[list[int], list[int], int | None]:
    """Derived depth (kept normal layers of one U-Net) at every evaluation, and the maximum."""
    from restore.models.genotype import from_dict

    steps, depths, top = [], [], None
    for entry in read_jsonl(run / "arch_log.jsonl"):
        g = from_dict(entry["genotype"])
        steps.append(int(entry["step"]))
        depths.append(depth(g))
        top = max_depth(g)
    return steps, depths, top


def searched_genotype(run: Path) -> Path | None:
    path = run / "genotype.json"
    return path if path.exists() else None


def train_searched(ctx: Ctx, search_name: str) -> Path | None:
    """Train the genotype a search chose (best Train V PSNR after warm-up), at T=1."""
    g = searched_genotype(ctx.runs / "search" / search_name)
    if g is None:
        return None
    return run_train(ctx, f"searched-{search_name}", g)


def train_curve(run: Path, key: str = "val_psnr") -> tuple[list[int], list[float]]:
    return series(read_csv(run / "metrics.csv"), key)


def train_head(m: dict) -> str:
    """The training-budget sentence of a table, from its data's `meta`."""
    tb = m["train_budget"]
    return (f"Training budget per network: {tb['steps']} Adam steps (lr {tb['lr']:g} → {tb['lr_min']:g} cosine, "
            f"EMA {tb['ema']}), batch {tb['batch']} of {tb['patch']}×{tb['patch']} Train400 patches, AWGN σ=25, "
            f"T=1, {m['threads']} thread(s); test: {m['test']} σ=25 (DnCNN protocol), final EMA weights; "
            "GFLOPs of one 256×256 forward (FlopCounterMode, 2 per MAC).")


def genotype_file(ctx: Ctx, g) -> Path:
    """Write a derived genotype under the run folder (for TrainConfig.model)."""
    from restore.models.genotype import save_genotype

    path = ctx.runs / "genotypes" / f"{g.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_genotype(g, path)
    return path


def val_input_psnr(ctx: Ctx, seed: int = 0) -> float:
    """Mean PSNR of the noisy Train V images a search with this seed scores (the 'do nothing' level)."""
    import numpy as np

    from restore.metrics import psnr
    from restore.search import make_config, split_images
    from restore.search.searcher import load_val_images
    from restore.train.trainer import default_val_spec

    cfg = make_config(None, train_dirs=[str(ctx.data)], **{**ctx.search_budget, "seed": seed})
    paths = split_images(cfg).val[: cfg.val_images or None]
    items = load_val_images(paths, default_val_spec(cfg.degradation), cfg.channels)
    return float(np.mean([psnr(np.clip(d, 0, 1), c, data_range=1.0) for _, d, c in items]))


def arch_spread(run: Path) -> dict:
    """How far the architecture parameters moved by the last evaluation: the mean over layers
    of the largest softmax(α) (uniform = 1/#candidates) and of the largest softmax(γ)."""
    log = read_jsonl(run / "arch_log.jsonl")
    if not log:
        return {}
    last = log[-1]
    normal = [v for k, v in last["alpha"].items() if ".l" in k]
    out = {"alpha_max": sum(max(v) for v in normal) / len(normal), "alpha_uniform": 1 / len(normal[0])}
    if last.get("gamma"):
        out["gamma_max_minus_uniform"] = sum(max(v) - 1 / len(v) for v in last["gamma"].values()) / len(last["gamma"])
    return out


def keep_vs_identity(run: Path) -> dict:
    """At the last evaluation: the mean softmax weight of 'keep the op' — γ's last entry
    (dense) or 1 − α(skip) (skip among candidates) — minus its value under uniform weights."""
    log = read_jsonl(run / "arch_log.jsonl")
    if not log:
        return {}
    last = log[-1]
    if last.get("gamma"):
        vals = [v[-1] - 1 / len(v) for v in last["gamma"].values()]
        return {"keep_minus_uniform": sum(vals) / len(vals), "how": "γ(op path)"}
    ops = last["ops"]["normal"]
    if "skip" not in ops:
        return {}
    k = ops.index("skip")
    normal = [v for key, v in last["alpha"].items() if ".l" in key]
    vals = [(1 - v[k]) - (1 - 1 / len(v)) for v in normal]
    return {"keep_minus_uniform": sum(vals) / len(vals), "how": "1 − α(skip)"}
