"""Experiment 1 (MoD-NAS Fig. 3): search stability, model-guided unfolding vs plain DARTS.

Two searches of the same MoD-NAS U-Net space with the same data, budget and optimisers:
MoD-NAS (T = 2 unfolded U-Nets with the learned δ(t), dense depth search γ) and plain
differentiable NAS (`unfold=False`: one U-Net, no δ). The figure is the supernet's Train V
PSNR over the search (the paper plots Set12 over 140 epochs); the table gives the PSNR at
the end of the weight-only warm-up, the best and the final PSNR after it, the drop from
the best to the end (a late collapse shows as a large negative value), the worst fall
between two evaluations, and the RMS of the step-to-step changes (smoothness).

The pair runs twice, with seeds 0 and 1 (the seed re-draws the initialisation and the
Train W / A / V split, so each row lists its own noisy-input PSNR). Every U-Net's final
1×1 conv starts with a zero bias (restore.models.modnas._zero_bias), so no arm starts
with a constant output offset.

    python benchmarks/paper_fidelity/exp1_stability.py           # CPU budget (common.SEARCH_BUDGET)
    python benchmarks/paper_fidelity/exp1_stability.py --smoke   # CI: seconds
    python benchmarks/paper_fidelity/exp1_stability.py --report-only   # from runs/, else docs/results/paper_fidelity/
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

ARMS = {"modnas-unfold-dense": "MoD-NAS, seed 0 (T=2 unfolded, δ; γ)",
        "plain-dense": "plain DARTS, seed 0 (one U-Net, no δ; γ)",
        "modnas-unfold-dense-seed1": "MoD-NAS, seed 1",
        "plain-dense-seed1": "plain DARTS, seed 1"}
COLORS = {"modnas-unfold-dense": "tab:blue", "plain-dense": "tab:orange",
          "modnas-unfold-dense-seed1": "tab:cyan", "plain-dense-seed1": "tab:red"}


def collect(ctx: common.Ctx) -> dict:
    """Run (or resume, or read) the four searches; everything the table and figure need."""
    from restore.models.genotype import load_genotype

    runs = {name: common.search_arm(ctx, name) for name in ARMS}
    cfg = ctx.search_budget
    warmup = round(cfg["warmup_fraction"] * cfg["steps"])
    noisy: dict[int, float] = {}
    arms = {}
    for name, run in runs.items():
        s = common.search_summary(run, warmup)
        s["arch_spread"] = common.arch_spread(run)
        g = common.searched_genotype(run)
        s["chosen_depth"] = common.depth(load_genotype(g)) if g else None
        s["seed"] = seed = common.SEARCH_ARMS[name].get("seed", 0)
        s["noisy_psnr"] = noisy.setdefault(seed, common.val_input_psnr(ctx, seed))
        s["wall_seconds"] = common.wall_seconds(run)
        rows = common.read_csv(run / "metrics.csv")
        s["curve_val_psnr"] = common.series(rows, "val_psnr")
        s["curve_loss"] = common.series(rows, "loss")
        arms[name] = s
    return {"meta": common.meta(ctx), "warmup": warmup, "arms": arms}


def report(ctx: common.Ctx, data: dict) -> None:
    cfg, warmup, arms = data["meta"]["search_budget"], data["warmup"], data["arms"]
    rows = []
    for name, label in ARMS.items():
        s = arms[name]
        secs = s.get("wall_seconds")
        gain = None if s.get("final_psnr") is None else s["final_psnr"] - s["noisy_psnr"]
        rows.append([label, s["noisy_psnr"], s.get("last_step"), s.get("warmup_psnr"), s.get("best_psnr"),
                     s.get("best_step"), s.get("final_psnr"), gain, s.get("drop_from_best"), s.get("worst_fall"),
                     s.get("roughness"), s["arch_spread"].get("alpha_max"), s["chosen_depth"],
                     None if secs is None else f"{secs / 60:.1f}"])
    head = (f"MoD-NAS space: C={cfg['modnas_channels']}, {cfg['levels']} levels × {cfg['layers_per_block']} layers, "
            f"σ=25, batch {cfg['batch']} of {cfg['patch']}×{cfg['patch']}, {cfg['steps']} steps "
            f"(arch updates from step {warmup}), Train V = {cfg['val_images']} Train400 images, "
            f"{data['meta']['threads']} thread(s). "
            "PSNR in dB on Train V (its images depend on the seed: the noisy-input column is the do-nothing level).")
    table = common.markdown_table(
        ["search", "noisy input PSNR (Train V)", "steps done", "PSNR end of warm-up", "best PSNR after", "at step", "final PSNR",
         "final − noisy", "final − best", "worst fall between evals", "RMS change between evals",
         f"mean max softmax(α) at end (uniform {1 / 7:.3f})", "chosen depth (normal layers kept)", "wall (min)"], rows)
    common.write_table(ctx, head + "\n\n" + table, data)

    plt = common.figure()
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    for name, label in ARMS.items():
        axes[0].plot(*arms[name]["curve_val_psnr"], "o-", ms=3, color=COLORS[name], label=label)
        axes[1].plot(*arms[name]["curve_loss"], "-", color=COLORS[name], label=label)
    levels = sorted({arms[n]["seed"]: arms[n]["noisy_psnr"] for n in ARMS}.items())
    axes[0].axhline(sum(v for _, v in levels) / len(levels), color="k", ls=":", lw=1,
                    label="noisy input (" + ", ".join(f"seed {s}: {v:.2f}" for s, v in levels) + " dB)")
    for ax in axes:
        ax.axvline(warmup, color="gray", ls="--", lw=1, label="end of warm-up (arch updates start)")
        ax.set_xlabel("search step (weight update; + arch update after warm-up)")
    axes[0].set_ylabel("supernet PSNR on Train V (dB), σ = 25")
    axes[0].set_title("Supernet validation PSNR during the search")
    axes[1].legend(*axes[0].get_legend_handles_labels(), fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    axes[1].set_ylabel("Train W loss (MSE, mean since last log)")
    if any(arms[n]["curve_loss"][1] for n in ARMS):
        axes[1].set_yscale("log")
    axes[1].set_title("Weight-training loss")
    common.save_figure(ctx, fig, "pf_exp1_stability")


def main(argv: list[str] | None = None) -> dict:
    a = common.parser(__doc__.splitlines()[0]).parse_args(argv)
    ctx = common.Ctx(a, "exp1_stability")
    data = ctx.saved or collect(ctx)
    report(ctx, data)
    return data["arms"]


if __name__ == "__main__":
    main()
