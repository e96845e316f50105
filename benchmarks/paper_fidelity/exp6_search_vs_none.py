"""Experiment 6: search vs no search — the CPU-searched genotype, the paper's Table 7
genotype (preset `modnas-b`) and a hand-made U-Net of about the same FLOPs as Table 7.

The searched genotype is the one the exp 1 MoD-NAS search chose (best Train V PSNR after
the warm-up; search/modnas-unfold-dense); the one exp 2's skip-in-candidates search chose
is shown too (both runs are shared with exps 1 and 2). The hand-made U-Net
(benchmarks/paper_fidelity/handmade_unet.json) has Table 7's skeleton — 3 levels, 3 normal
layers per block, a head, fusion convs — with conv_3x3 in every normal layer, a strided
3×3 conv for every down-sampling, a 3×3 transposed conv for every up-sampling, and one
uniform width chosen so that its FLOPs match modnas-b's (`--write-handmade` regenerates
it). All three are trained at T = 1 with the same budget, data and seed and tested on
Set12, σ = 25.

    python benchmarks/paper_fidelity/exp6_search_vs_none.py                    # CPU budget
    python benchmarks/paper_fidelity/exp6_search_vs_none.py --write-handmade   # re-derive the hand-made width
    python benchmarks/paper_fidelity/exp6_search_vs_none.py --smoke            # CI: seconds
    python benchmarks/paper_fidelity/exp6_search_vs_none.py --report-only      # from runs/, else docs/results/paper_fidelity/
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

HANDMADE = common.HERE / "handmade_unet.json"
SEARCH = "modnas-unfold-dense"
SEARCH_SKIP = "modnas-unfold-skip"  # exp 2's ablation search, shown for reference


def handmade(width: int, levels: int = 3, layers: int = 3):
    """The hand-made U-Net genotype at a uniform `width`."""
    from restore.models.genotype import from_dict

    def body():
        return [{"op": "conv_3x3", "channels": width} for _ in range(layers)]

    enc = [{"layers": body(), "sample": {"op": "conv_3x3_s2", "channels": width}} for _ in range(levels)]
    dec = [{"layers": body(), "sample": {"op": "deconv_3x3", "channels": width} if b < levels else None,
            **({"fuse_channels": width} if b else {})} for b in range(levels + 1)]
    return from_dict({"format": "restore-genotype", "version": 1, "space": "modnas", "name": f"handmade-unet-c{width}",
                      "head_channels": width, "stages": 1, "in_channels": 1, "out_channels": 1, "noise_map": False,
                      "encoder": enc, "decoder": dec})


def match_width(reference: str = "modnas-b") -> tuple[int, float, float]:
    """The uniform width whose FLOPs (256×256) are closest to the reference's (log ratio)."""
    from restore.models.build import resolve_genotype

    target = common.cost(resolve_genotype(reference))["gflops"]
    best = min(range(8, 97), key=lambda w: abs(math.log(common.cost(handmade(w))["gflops"] / target)))
    return best, common.cost(handmade(best))["gflops"], target


LABELS = {"searched": "CPU-searched (exp 1 MoD-NAS search, dense γ)",
          "searched-skip": "CPU-searched (exp 2 ablation: skip in candidates)",
          "modnas-b": "paper Table 7 (modnas-b)", "handmade": "hand-made U-Net (conv 3×3, uniform width)"}
# the Table 7 and hand-made points sit at almost the same FLOPs: label one below, one above
LABEL_OFFSET = {"modnas-b": (-8, -10, "right"), "handmade": (-8, 4, "right")}
COLORS = {"searched": "tab:green", "searched-skip": "tab:olive", "modnas-b": "tab:blue", "handmade": "tab:orange"}


def collect(ctx: common.Ctx) -> dict:
    from restore.models.build import resolve_genotype

    common.search_arm(ctx, SEARCH)
    common.search_arm(ctx, SEARCH_SKIP)
    searched = common.searched_genotype(ctx.runs / "search" / SEARCH)
    searched_skip = common.searched_genotype(ctx.runs / "search" / SEARCH_SKIP)
    if ctx.smoke:
        preset = common.genotype_file(ctx, common.uniform_width(resolve_genotype("modnas-b"), 4))
        hand = common.genotype_file(ctx, handmade(4))
        nets = {"searched": searched, "searched-skip": searched_skip, "modnas-b": preset, "handmade": hand}
        names = {"modnas-b": "modnas-b-smoke", "handmade": "handmade-smoke"}
    else:
        nets = {"searched": searched, "searched-skip": searched_skip, "modnas-b": "modnas-b", "handmade": HANDMADE}
        names = {"modnas-b": "modnas-b", "handmade": "handmade-unet"}
    names.update({"searched": f"searched-{SEARCH}", "searched-skip": f"searched-{SEARCH_SKIP}"})
    runs = {k: (common.run_train(ctx, names[k], nets[k]) if nets[k] else None) for k in nets}
    data = {"meta": common.meta(ctx)}
    for key in LABELS:
        run = runs[key]
        g = resolve_genotype(str(nets[key])) if nets[key] else None
        data[key] = {"cost": common.cost(g) if g else {}, "test": common.evaluate_run(ctx, run) if run else None,
                     "wall_seconds": common.wall_seconds(run) if run else None, "genotype": str(nets[key]),
                     "depth": common.depth(g) if g else None,
                     "curve_val_psnr": common.train_curve(run) if run else None}
    return data


def report(ctx: common.Ctx, data: dict) -> None:
    rows = []
    for key, label in LABELS.items():
        d = data[key]
        c, test, secs = d["cost"], d["test"], d["wall_seconds"]
        rows.append([label, c.get("params"), c.get("gflops"), test and test["psnr"], test and test["ssim"],
                     None if secs is None else f"{secs / 60:.1f}"])
    table = common.markdown_table(["network (T=1)", "params", "GFLOPs (256²)", "test PSNR", "test SSIM", "train wall (min)"], rows)
    common.write_table(ctx, common.train_head(data["meta"]) + "\n\n" + table, data)

    plt = common.figure()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for key, label in LABELS.items():
        d = data[key]
        if d["curve_val_psnr"] is None:
            continue
        axes[0].plot(*d["curve_val_psnr"], "o-", ms=3, color=COLORS[key], label=label)
        if d["test"]:
            x, y = d["cost"]["gflops"], d["test"]["psnr"]
            axes[1].scatter([x], [y], s=40, color=COLORS[key], label=label)
            dx, dy, ha = LABEL_OFFSET.get(key, (6, -3, "left"))
            axes[1].annotate(f"{y:.2f} dB", (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, fontsize=7)
    axes[0].set_xlabel("training step")
    axes[0].set_ylabel("PSNR on held-out Train400 (dB), σ = 25")
    axes[0].set_title("Validation PSNR during training")
    axes[0].legend(fontsize=7)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("GFLOPs per 256×256 forward (log scale)")
    axes[1].set_ylabel(f"{data['meta']['test']} PSNR (dB), σ = 25")
    axes[1].set_title("Test PSNR vs cost after equal training")
    axes[1].legend(fontsize=7)
    common.save_figure(ctx, fig, "pf_exp6_search_vs_none")


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--write-handmade", action="store_true", help="re-derive the hand-made width and write its JSON")
    a = p.parse_args(argv)
    if a.write_handmade:
        import torch

        from restore.models.genotype import save_genotype

        torch.set_num_threads(a.threads)
        width, flops, target = match_width()
        save_genotype(handmade(width), HANDMADE)
        print(f"hand-made U-Net: width {width}, {flops:.2f} GFLOPs vs modnas-b {target:.2f} (256×256) → {HANDMADE}")
        return {"width": width}
    ctx = common.Ctx(a, "exp6_search_vs_none")
    data = ctx.saved or collect(ctx)
    report(ctx, data)
    return data


if __name__ == "__main__":
    main()
