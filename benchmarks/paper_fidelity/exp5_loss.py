"""Experiment 5 (IR-NAS Table 5): MSE vs MSE + 0.5·log10(1/SSIM) as the training loss.

One derived denoiser (default: the MoD-NAS-B genotype of Table 7 at T = 1 — a derived
HiNAS network with deformable convs is ~17× slower per op on this CPU) trained twice with
the same budget, data and seed, once with each loss (`TrainConfig.loss`), and tested on
Set12 at σ = 25 (PSNR and SSIM). The paper's Table 5 uses its IR-NAS network on BSD500
at σ = 30/50/70.

    python benchmarks/paper_fidelity/exp5_loss.py           # CPU budget
    python benchmarks/paper_fidelity/exp5_loss.py --smoke   # CI: seconds
    python benchmarks/paper_fidelity/exp5_loss.py --report-only   # from runs/, else docs/results/paper_fidelity/
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

LOSSES = {"mse": "MSE", "mse+logssim": "MSE + 0.5·log10(1/SSIM)"}
PAPER = {"mse": "29.03 / 0.8254", "mse+logssim": "29.14 / 0.8403"}  # Table 5, BSD500 σ=30 (IR-NAS*, IR-NAS**)


def collect(ctx: common.Ctx, model_name: str) -> dict:
    from restore.models.build import resolve_genotype

    g = resolve_genotype(model_name)
    model: str | Path = model_name
    stem = Path(str(model_name)).stem
    if ctx.smoke:
        g = common.uniform_width(g, 4)
        model, stem = common.genotype_file(ctx, g), "modnas-b-smoke"
    runs = {"mse": common.run_train(ctx, stem, model, loss="mse"),
            "mse+logssim": common.run_train(ctx, f"{stem}-logssim", model, loss="mse+logssim", ssim_weight=0.5)}
    data = {"meta": common.meta(ctx), "network": stem, "cost": common.cost(g)}
    for key in LOSSES:
        data[key] = {"test": common.evaluate_run(ctx, runs[key]), "wall_seconds": common.wall_seconds(runs[key]),
                     "curve_val_psnr": common.train_curve(runs[key], "val_psnr"),
                     "curve_val_ssim": common.train_curve(runs[key], "val_ssim")}
    return data


def report(ctx: common.Ctx, data: dict) -> None:
    rows = []
    for key, label in LOSSES.items():
        test = data[key]["test"]
        rows.append([label, test and test["psnr"], test and test["ssim"], PAPER[key]])
    table = common.markdown_table(["training loss", "test PSNR", "test SSIM", "paper Table 5, BSD500 σ=30: PSNR / SSIM"], rows)
    head = common.train_head(data["meta"]) + f" Network: {data['network']}, {data['cost']['params']:,} params."
    common.write_table(ctx, head + "\n\n" + table, data)

    plt = common.figure()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for key, color in (("mse", "tab:blue"), ("mse+logssim", "tab:orange")):
        for ax, metric in zip(axes, ("curve_val_psnr", "curve_val_ssim")):
            ax.plot(*data[key][metric], "o-", ms=3, color=color, label=LOSSES[key])
    axes[0].set_ylabel("PSNR on held-out Train400 (dB), σ = 25")
    axes[1].set_ylabel("SSIM on held-out Train400, σ = 25")
    for ax, title in zip(axes, ("Validation PSNR", "Validation SSIM")):
        ax.set_xlabel("training step")
        ax.set_title(title)
        ax.legend(fontsize=7)
    common.save_figure(ctx, fig, "pf_exp5_loss")


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="modnas-b", help="the derived genotype (preset or JSON)")
    a = p.parse_args(argv)
    ctx = common.Ctx(a, "exp5_loss")
    data = ctx.saved or collect(ctx, a.model)
    report(ctx, data)
    return data


if __name__ == "__main__":
    main()
