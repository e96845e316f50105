"""Experiment 2 (MoD-NAS Fig. 4): dense depth search (γ) vs `skip` among the candidate ops.

Two MoD-NAS searches (T = 2, same budget): the paper's densely connected blocks whose
path weights γ choose the depth (Eq. 11), and the ablation with no γ and `skip` added to
the normal-layer candidates. The figure tracks the derived depth — normal layers kept in
one U-Net by the genotype derived at each evaluation — against the maximum depth, and the
supernet's Train V PSNR. The table adds the genotype each search chose (best Train V PSNR
after the warm-up) trained at T = 1 with the common training budget and tested on Set12.

    python benchmarks/paper_fidelity/exp2_depth.py           # CPU budget
    python benchmarks/paper_fidelity/exp2_depth.py --smoke   # CI: seconds
    python benchmarks/paper_fidelity/exp2_depth.py --report-only   # from runs/, else docs/results/paper_fidelity/
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

ARMS = {"modnas-unfold-dense": "dense blocks, depth by γ (paper)", "modnas-unfold-skip": "skip among candidates"}


COLORS = {"modnas-unfold-dense": "tab:blue", "modnas-unfold-skip": "tab:orange"}


def collect(ctx: common.Ctx) -> dict:
    from restore.models.genotype import load_genotype

    runs = {name: common.search_arm(ctx, name) for name in ARMS}
    trained = {name: common.train_searched(ctx, name) for name in ARMS}
    cfg = ctx.search_budget
    warmup = round(cfg["warmup_fraction"] * cfg["steps"])
    data = {"meta": common.meta(ctx), "warmup": warmup}
    for name in ARMS:
        steps, depths, top = common.arch_depths(runs[name])
        g_path = common.searched_genotype(runs[name])
        g = load_genotype(g_path) if g_path else None
        data[name] = {"steps": steps, "depths": depths, "max_depth": top,
                      "search": common.search_summary(runs[name], warmup), "cost": common.cost(g) if g else {},
                      "chosen_depth": common.depth(g) if g else None,
                      "test": common.evaluate_run(ctx, trained[name]) if trained[name] else None,
                      "keep": common.keep_vs_identity(runs[name]),
                      "search_wall_seconds": common.wall_seconds(runs[name]),
                      "train_wall_seconds": common.wall_seconds(trained[name]) if trained[name] else None,
                      "curve_val_psnr": common.series(common.read_csv(runs[name] / "metrics.csv"), "val_psnr")}
    return data


def report(ctx: common.Ctx, data: dict) -> None:
    cfg, tb, warmup = data["meta"]["search_budget"], data["meta"]["train_budget"], data["warmup"]
    rows = []
    for name, label in ARMS.items():
        d = data[name]
        steps, depths, s, c, test = d["steps"], d["depths"], d["search"], d["cost"], d["test"]
        after = [dp for st, dp in zip(steps, depths) if st > warmup]
        rows.append([label, d["max_depth"], depths[0] if depths else None, d["keep"].get("keep_minus_uniform"),
                     min(after) if after else None, depths[-1] if depths else None, d["chosen_depth"],
                     s.get("final_psnr"), s.get("best_psnr"), c.get("params"), c.get("gflops"),
                     test and test["psnr"], test and test["ssim"]])
    head = (f"Search budget as exp 1 (T=2, C={cfg['modnas_channels']}, {cfg['levels']} levels × "
            f"{cfg['layers_per_block']} layers, {cfg['steps']} steps); depth = normal layers kept in one U-Net. "
            f"Chosen genotype trained at T=1 for {tb['steps']} steps (batch {tb['batch']} of {tb['patch']}×{tb['patch']}, "
            f"σ=25, Train400), tested on {data['meta']['test']} σ=25; GFLOPs per 256×256 forward.")
    table = common.markdown_table(
        ["search", "max depth", "depth at first eval (random init)",
         "weight of keeping the op − uniform, at end (dense: γ; skip: 1 − α_skip)", "min depth after warm-up", "final derived depth",
         "chosen genotype depth", "final supernet PSNR (Train V)", "best supernet PSNR", "params (chosen)",
         "GFLOPs (chosen)", "test PSNR", "test SSIM"], rows)
    common.write_table(ctx, head + "\n\n" + table, data)

    plt = common.figure()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    top = None
    for name, label in ARMS.items():
        d = data[name]
        top = d["max_depth"] or top
        axes[0].plot(d["steps"], d["depths"], "o-", ms=3, color=COLORS[name], label=label)
        axes[1].plot(*d["curve_val_psnr"], "o-", ms=3, color=COLORS[name], label=label)
    if top:
        axes[0].axhline(top, color="gray", lw=1.5, label="max depth of one U-Net")
        axes[0].set_ylim(0, top + 1)
    for ax in axes:
        ax.axvline(warmup, color="gray", ls="--", lw=1, label="end of warm-up")
        ax.set_xlabel("search step")
    axes[0].set_ylabel("derived depth (normal layers kept)")
    axes[0].set_title("Derived network depth during the search")
    axes[0].legend(fontsize=7, loc="center right")
    axes[1].set_ylabel("supernet PSNR on Train V (dB), σ = 25")
    axes[1].set_title("Supernet validation PSNR")
    axes[1].legend(fontsize=7)
    common.save_figure(ctx, fig, "pf_exp2_depth")


def main(argv: list[str] | None = None) -> dict:
    a = common.parser(__doc__.splitlines()[0]).parse_args(argv)
    ctx = common.Ctx(a, "exp2_depth")
    data = ctx.saved or collect(ctx)
    report(ctx, data)
    return data


if __name__ == "__main__":
    main()
