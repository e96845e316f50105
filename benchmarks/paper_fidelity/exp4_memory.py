"""Experiment 4 (IR-NAS §3.2): memory of shared cell weights vs Auto-DeepLab-style cells.

The HiNAS supernet with one cell per width per layer, fed the β-mix of its inputs (Eq. 5,
`shared_cells=True`), against the Auto-DeepLab variant with a separate cell per incoming
path whose outputs are β-summed (Eq. 6, `shared_cells=False`). Each variant runs one
forward + backward (MSE + 0.5·log-SSIM, the search loss) on the same batch in a *fresh
subprocess*; we report the peak resident set size (`resource.getrusage(...).ru_maxrss`)
before and after it, the bytes autograd saved for backward (every saved tensor's storage
counted once, via `torch.autograd.graph.saved_tensors_hooks`), the parameter count and
the wall time.

    python benchmarks/paper_fidelity/exp4_memory.py            # paper widths: 4 layers × 5 nodes, W=10, 2×1×64×64
    python benchmarks/paper_fidelity/exp4_memory.py --smoke    # CI: seconds
    python benchmarks/paper_fidelity/exp4_memory.py --report-only   # from runs/…/tables, else docs/results/paper_fidelity/
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

VARIANTS = {"shared": "one cell per width per layer (IR-NAS, Eq. 5)",
            "separate": "a cell per incoming path (Auto-DeepLab, Eq. 6)"}


def worker(variant: str, layers: int, nodes: int, width: int, stem: int, batch: int, size: int, threads: int) -> dict:
    """One measurement; meant to run as the only work of a fresh process."""
    import resource
    import time

    import torch

    from restore.metrics import mse_log_ssim_loss
    from restore.models.hinas import HiNASSupernet
    from restore.runtime.profile import count_parameters

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = HiNASSupernet(1, 1, layers=layers, nodes=nodes, base_width=width, stem_channels=stem,
                          shared_cells=(variant == "shared"))
    model.train()
    x = torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(1))
    y = torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(2))
    # warm-up on a tiny input: one-time lazy initialisation (kernels, allocator pools,
    # library loading) is then not counted as the variant's memory
    tiny = torch.rand(1, 1, 16, 16)
    mse_log_ssim_loss(model(tiny), tiny, lam=0.5).backward()
    model.zero_grad(set_to_none=True)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    storages: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = max(storages.get(s.data_ptr(), 0), s.nbytes())
        return t

    t0 = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = mse_log_ssim_loss(model(x), y, lam=0.5)
    loss.backward()
    seconds = time.perf_counter() - t0
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cells = sum(1 for m in model.modules() if type(m).__name__ == "SuperCell")
    return {"variant": variant, "params": count_parameters(model), "cells": cells,
            "rss_before_mib": rss_before / 1024, "rss_peak_mib": rss_peak / 1024,
            "rss_delta_mib": (rss_peak - rss_before) / 1024, "saved_mib": sum(storages.values()) / 2**20,
            "seconds": seconds, "loss": float(loss)}


def measure(variant: str, a) -> dict:
    cmd = [sys.executable, __file__, "--worker", variant, "--layers", str(a.layers), "--nodes", str(a.nodes),
           "--width", str(a.width), "--stem", str(a.stem), "--batch", str(a.batch), "--size", str(a.size),
           "--threads", str(a.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"exp4 worker {variant} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--width", type=int, default=10, help="W (cell widths W, 2W, 4W)")
    p.add_argument("--stem", type=int, default=64)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2, help="fresh processes per variant")
    p.add_argument("--worker", choices=list(VARIANTS), help=argparse_hidden())
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.worker, a.layers, a.nodes, a.width, a.stem, a.batch, a.size, a.threads)))
        return {}
    if a.smoke:
        a.layers, a.nodes, a.width, a.stem, a.batch, a.size, a.repeats = 2, 1, 2, 4, 1, 16, 1
    ctx = common.Ctx(a, "exp4_memory")
    cache = ctx.tables / "exp4_memory.json"
    setting = dict(layers=a.layers, nodes=a.nodes, width=a.width, stem=a.stem, batch=a.batch, size=a.size,
                   threads=a.threads, repeats=a.repeats)
    if ctx.saved:  # --report-only from docs/results/paper_fidelity (or --results)
        saved = ctx.saved
    elif a.report_only:  # --report-only: this run folder's own measurements, else the published ones
        path = cache if cache.exists() else common.RESULTS / "exp4_memory.json"
        if not path.exists():
            print(f"[exp4_memory] not run yet: no {cache} and no {path}")
            return {}
        saved = json.loads(path.read_text())
    else:
        saved = None
    if saved:
        runs, meta = saved["runs"], saved.get("meta") or common.meta(ctx)
        setting.update(saved["setting"])
        setting.setdefault("repeats", len(runs) // len(VARIANTS))
        a = argparse.Namespace(**{**vars(a), **setting})
    else:
        runs, meta = [measure(v, a) for _ in range(a.repeats) for v in VARIANTS], common.meta(ctx)
    by = {v: [r for r in runs if r["variant"] == v] for v in VARIANTS}

    def mean(v, key):
        return sum(r[key] for r in by[v]) / len(by[v])

    rows = []
    for v, label in VARIANTS.items():
        rows.append([f"{v}: {label}", by[v][0]["cells"], by[v][0]["params"], mean(v, "rss_before_mib"),
                     mean(v, "rss_peak_mib"), mean(v, "rss_delta_mib"), mean(v, "saved_mib"), mean(v, "seconds")])
    # a tiny (smoke) network can leave the peak RSS unchanged: report no ratio rather than divide by 0
    ratio = {k: quotient(mean("shared", k), mean("separate", k)) for k in ("rss_peak_mib", "rss_delta_mib", "saved_mib")}
    ratio["params"] = quotient(by["shared"][0]["params"], by["separate"][0]["params"])
    head = (f"HiNAS supernet, {a.layers} layers × {a.nodes} nodes, W={a.width}, stem {a.stem}; one forward+backward "
            f"(MSE + 0.5·log-SSIM) on a {a.batch}×1×{a.size}×{a.size} batch, {a.threads} thread(s), "
            f"fresh process per measurement, mean of {a.repeats}.")
    table = common.markdown_table(
        ["supernet", "SuperCells", "params", "RSS before (MiB)", "peak RSS (MiB)", "peak − before (MiB)",
         "saved for backward (MiB)", "fwd+bwd (s)"], rows)
    table += (f"\n\nshared / separate: peak RSS {fmt(ratio['rss_peak_mib'])}, peak − before {fmt(ratio['rss_delta_mib'])}, "
              f"saved tensors {fmt(ratio['saved_mib'])}, params {fmt(ratio['params'])}")
    data = {"meta": meta, "setting": setting, "runs": runs, "ratio": ratio}
    common.write_table(ctx, head + "\n\n" + table, data)

    plt = common.figure()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    names = list(VARIANTS)
    colors = ["tab:blue", "tab:orange"]
    x = range(len(names))
    ax = axes[0]
    before = [mean(v, "rss_before_mib") for v in names]
    delta = [mean(v, "rss_delta_mib") for v in names]
    saved = [mean(v, "saved_mib") for v in names]
    ax.bar(x, before, color="lightgray", label="RSS before forward (model, runtime)")
    ax.bar(x, delta, bottom=before, color=colors, label="peak increase during fwd+bwd")
    ax.scatter(x, [b + s for b, s in zip(before, saved)], marker="_", s=600, color="k", zorder=3,
               label="before + tensors saved for backward")
    ax.set_xticks(list(x), ["shared cells\n(IR-NAS)", "cell per path\n(Auto-DeepLab)"])
    ax.set_ylim(0, max(b + d for b, d in zip(before, delta)) * 1.3)
    ax.set_ylabel("peak resident memory (MiB)")
    ax.set_title(f"Peak RSS, fwd+bwd of {a.batch}×1×{a.size}×{a.size}")
    ax.legend(fontsize=7, loc="upper left")
    ax = axes[1]
    params = [by[v][0]["params"] / 1e6 for v in names]
    ax.bar(x, params, color=colors)
    for i, v in enumerate(params):
        ax.text(i, v, f"{v:.2f}M", ha="center", va="bottom")
    ax.set_ylim(0, max(params) * 1.15)
    ax.set_xticks(list(x), ["shared cells\n(IR-NAS)", "cell per path\n(Auto-DeepLab)"])
    ax.set_ylabel("supernet parameters (millions)")
    ax.set_title(f"Parameters, {a.layers} layers × {a.nodes} nodes, W={a.width}")
    common.save_figure(ctx, fig, "pf_exp4_memory")
    return data


def quotient(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def fmt(r: float | None) -> str:
    return "n/a (no measurable increase)" if r is None else f"{r:.2f}"


def argparse_hidden():
    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
