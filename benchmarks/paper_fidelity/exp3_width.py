"""Experiment 3 (MoD-NAS Table 1): searched per-layer widths vs every layer at 64 channels.

The searched network is the paper's own MoD-NAS-B genotype (Table 7, preset `modnas-b`,
per-layer widths 24–48 chosen by the β rule of Eq. 10); the comparison is the same
genotype with the head, every layer and every sampler at 64 channels (fusion convs at half
their concat width, as derived). Both are trained with the same budget (T = 1 to fit the
CPU budget; the paper's Table 1 uses T = 3) and tested on Set12, σ = 25. Our own CPU
search runs at C = 8, where Eq. 10's multiple-of-8 rule can only give 8: its width search
is degenerate, so it is not used here.

    python benchmarks/paper_fidelity/exp3_width.py           # CPU budget
    python benchmarks/paper_fidelity/exp3_width.py --smoke   # CI: seconds
    python benchmarks/paper_fidelity/exp3_width.py --report-only   # from runs/, else docs/results/paper_fidelity/
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

PAPER = {"searched": ("1256k", "1.45G", 30.88), "c64": ("3245k", "3.46G", 30.89)}  # Table 1, T=3


def networks(ctx: common.Ctx, model: str, wide: int):
    from restore.models.build import resolve_genotype

    g = resolve_genotype(model)
    if ctx.smoke:  # tiny: the same structure at a few channels
        g = common.uniform_width(g, 4)
        wide = 8
    return {"searched": (g, model if not ctx.smoke else common.genotype_file(ctx, g)),
            "c64": (w := common.uniform_width(g, wide), common.genotype_file(ctx, w))}, wide


def collect(ctx: common.Ctx, model: str, wide: int) -> dict:
    nets, wide = networks(ctx, model, wide)
    names = {"searched": f"{Path(str(model)).stem} (searched widths)", "c64": f"same, all widths {wide}"}
    runs = {"searched": common.run_train(ctx, "modnas-b" if not ctx.smoke else "modnas-b-smoke", nets["searched"][1]),
            "c64": common.run_train(ctx, f"modnas-b-c{wide}", nets["c64"][1])}
    data = {"meta": common.meta(ctx), "wide": wide}
    for key in ("searched", "c64"):
        g = nets[key][0]
        data[key] = {"name": names[key], "cost": common.cost(g), "test": common.evaluate_run(ctx, runs[key]),
                     "widths": common.layer_widths(g), "wall_seconds": common.wall_seconds(runs[key]),
                     "curve_val_psnr": common.train_curve(runs[key])}
    return data


def report(ctx: common.Ctx, data: dict) -> None:
    rows = []
    for key in ("searched", "c64"):
        d = data[key]
        c, test, secs, widths = d["cost"], d["test"], d["wall_seconds"], d["widths"]
        rows.append([d["name"], f"{min(w for _, w in widths)}–{max(w for _, w in widths)}", c["params"], c["gflops"],
                     test and test["psnr"], test and test["ssim"], None if secs is None else f"{secs / 60:.1f}",
                     f"{PAPER[key][0]} / {PAPER[key][1]} / {PAPER[key][2]}"])
    table = common.markdown_table(
        ["network (T=1)", "widths", "params", "GFLOPs (256²)", "test PSNR", "test SSIM", "train wall (min)",
         "paper Table 1 (T=3): params / FLOPs / Set12 PSNR"], rows)
    common.write_table(ctx, common.train_head(data["meta"]) + "\n\n" + table, data)

    plt = common.figure()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), gridspec_kw={"width_ratios": [1.6, 1]})
    labels = [lab for lab, _ in data["searched"]["widths"]]
    xs = range(len(labels))
    axes[0].bar([x - 0.2 for x in xs], [w for _, w in data["searched"]["widths"]], 0.4, label=data["searched"]["name"])
    axes[0].bar([x + 0.2 for x in xs], [w for _, w in data["c64"]["widths"]], 0.4, label=data["c64"]["name"])
    axes[0].set_xticks(list(xs), labels, rotation=90, fontsize=7)
    axes[0].set_ylabel("output channels")
    axes[0].set_title("Per-layer widths (e = encoder, d = decoder, dn/up = samplers, fu = fusion)")
    axes[0].set_ylim(0, max(w for _, w in data["c64"]["widths"] + data["searched"]["widths"]) * 1.3)
    axes[0].legend(fontsize=7, loc="upper center", ncol=2)
    for key, color in (("searched", "tab:blue"), ("c64", "tab:orange")):
        d = data[key]
        axes[1].plot(*d["curve_val_psnr"], "o-", ms=3, color=color, label=f"{d['name']}: {d['cost']['params'] / 1e3:.0f}k params")
    axes[1].set_xlabel("training step")
    axes[1].set_ylabel("PSNR on held-out Train400 (dB), σ = 25")
    axes[1].set_title("Validation PSNR during training")
    axes[1].legend(fontsize=7)
    common.save_figure(ctx, fig, "pf_exp3_width")


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="modnas-b", help="the searched genotype (preset or JSON)")
    p.add_argument("--wide", type=int, default=64, help="the uniform width of the comparison")
    a = p.parse_args(argv)
    ctx = common.Ctx(a, "exp3_width")
    data = ctx.saved or collect(ctx, a.model, a.wide)
    report(ctx, data)
    return data


if __name__ == "__main__":
    main()
