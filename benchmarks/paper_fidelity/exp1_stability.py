"""Experiment 1 (MoD-NAS Fig. 3): search stability, model-guided unfolding vs plain DARTS.

Two searches of the same MoD-NAS U-Net space with the same data, budget and optimisers:
MoD-NAS (T = 2 unfolded U-Nets with the learned δ(t), dense depth search γ) and plain
differentiable NAS (`unfold=False`: one U-Net, no δ). The figure is the supernet's Train V
PSNR over the search (the paper plots Set12 over 140 epochs); the table gives the PSNR at
the end of the weight-only warm-up, the best and the final PSNR after it, the drop from
the best to the end (a late collapse shows as a large negative value), the worst fall
between two evaluations, and the RMS of the step-to-step changes (smoothness).

The pair runs twice, with seeds 0 and 1: at seed 0 the plain supernet's single tail conv
draws a bias of +0.215 (a constant output offset, 13 dB at init) while the two tails of
the T = 2 supernet nearly cancel; seed 1 draws a small one (−0.053). The seed also
re-draws the Train W / A / V split, so each row lists its own noisy-input PSNR.

    python benchmarks/paper_fidelity/exp1_stability.py           # CPU budget (common.SEARCH_BUDGET)
    python benchmarks/paper_fidelity/exp1_stability.py --smoke   # CI: seconds
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

ARMS = {"modnas-unfold-dense": "MoD-NAS, seed 0 (T=2 unfolded, δ; γ)", "plain-dense": "plain DARTS, seed 0 (one U-Net, no δ; γ)",
        "modnas-unfold-dense-seed1": "MoD-NAS, seed 1", "plain-dense-seed1": "plain DARTS, seed 1 (small tail bias)"}


def main(argv: list[str] | None = None) -> dict:
    a = common.parser(__doc__.splitlines()[0]).parse_args(argv)
    ctx = common.Ctx(a, "exp1_stability")
    runs = {name: common.search_arm(ctx, name) for name in ARMS}
    cfg = ctx.search_budget
    warmup = round(cfg["warmup_fraction"] * cfg["steps"])
    summaries = {name: common.search_summary(run, warmup) for name, run in runs.items()}

    from restore.models.genotype import load_genotype

    rows, noisy = [], {}
    for name, label in ARMS.items():
        s = summaries[name]
        secs = common.wall_seconds(runs[name])
        spread = common.arch_spread(runs[name])
        s["arch_spread"] = spread
        g = common.searched_genotype(runs[name])
        s["chosen_depth"] = common.depth(load_genotype(g)) if g else None
        seed = common.SEARCH_ARMS[name].get("seed", 0)
        s["noisy_psnr"] = noisy.setdefault(seed, common.val_input_psnr(ctx, seed))
        gain = None if s.get("final_psnr") is None else s["final_psnr"] - s["noisy_psnr"]
        rows.append([label, s["noisy_psnr"], s.get("last_step"), s.get("warmup_psnr"), s.get("best_psnr"),
                     s.get("best_step"), s.get("final_psnr"), gain, s.get("drop_from_best"), s.get("worst_fall"),
                     s.get("roughness"), spread.get("alpha_max"), s["chosen_depth"],
                     None if secs is None else f"{secs / 60:.1f}"])
    head = (f"MoD-NAS space: C={cfg['modnas_channels']}, {cfg['levels']} levels × {cfg['layers_per_block']} layers, "
            f"σ=25, batch {cfg['batch']} of {cfg['patch']}×{cfg['patch']}, {cfg['steps']} steps "
            f"(arch updates from step {warmup}), Train V = {cfg['val_images']} Train400 images, 1 thread. "
            "PSNR in dB on Train V (its images depend on the seed: the noisy-input column is the do-nothing level).")
    table = common.markdown_table(
        ["search", "noisy input PSNR (Train V)", "steps done", "PSNR end of warm-up", "best PSNR after", "at step", "final PSNR",
         "final − noisy", "final − best", "worst fall between evals", "RMS change between evals",
         f"mean max softmax(α) at end (uniform {1 / 7:.3f})", "chosen depth (normal layers kept)", "wall (min)"], rows)
    common.write_table(ctx, head + "\n\n" + table, {"summaries": summaries, "budget": cfg, "noisy_psnr": noisy})

    plt = common.figure()
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    colors = {"modnas-unfold-dense": "tab:blue", "plain-dense": "tab:orange",
              "modnas-unfold-dense-seed1": "tab:cyan", "plain-dense-seed1": "tab:red"}
    for name, label in ARMS.items():
        rows_ = common.read_csv(runs[name] / "metrics.csv")
        x, y = common.series(rows_, "val_psnr")
        axes[0].plot(x, y, "o-", ms=3, color=colors[name], label=label)
        x, y = common.series(rows_, "loss")
        axes[1].plot(x, y, "-", color=colors[name], label=label)
    levels = sorted(noisy.items())
    axes[0].axhline(sum(v for _, v in levels) / len(levels), color="k", ls=":", lw=1,
                    label="noisy input (" + ", ".join(f"seed {s}: {v:.2f}" for s, v in levels) + " dB)")
    for ax in axes:
        ax.axvline(warmup, color="gray", ls="--", lw=1, label="end of warm-up (arch updates start)")
        ax.set_xlabel("search step (weight update; + arch update after warm-up)")
    axes[0].set_ylabel("supernet PSNR on Train V (dB), σ = 25")
    axes[0].set_title("Supernet validation PSNR during the search")
    axes[1].legend(*axes[0].get_legend_handles_labels(), fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    axes[1].set_ylabel("Train W loss (MSE, mean since last log)")
    if any(common.read_csv(run / "metrics.csv") for run in runs.values()):
        axes[1].set_yscale("log")
    axes[1].set_title("Weight-training loss")
    common.save_figure(ctx, fig, "pf_exp1_stability")
    return summaries


if __name__ == "__main__":
    main()
