"""Human-readable facts about models, presets and genotypes (`restore info`, `restore models`)."""

from __future__ import annotations

from pathlib import Path

from restore.errors import RestoreError
from restore.models.genotype import Genotype, HiNASGenotype, ModNASGenotype


def _resolve(source: str) -> tuple[str, Genotype, "object | None"]:
    """(label, genotype, module or None) for a zoo name, run folder, preset or genotype file."""
    from restore.models.build import resolve_genotype
    from restore.models.genotype import load_genotype
    from restore.zoo.registry import get_entry, list_models

    if source in list_models():
        entry = get_entry(source)
        return f"zoo model {source} ({entry.task}, {entry.channels} ch)", load_genotype(entry.genotype_path), None
    path = Path(source)
    if path.is_dir():
        if not (path / "genotype.json").is_file():
            raise RestoreError(f"{path} has no genotype.json")
        return f"run {path}", load_genotype(path / "genotype.json"), None
    return f"genotype {source}", resolve_genotype(source), None


def summarize_genotype(g: Genotype) -> list[str]:
    if isinstance(g, ModNASGenotype):
        lines = [f"space: MoD-NAS U-Net, {g.levels} levels, T = {g.stages} stage(s), head {g.head_channels} ch"]
        for kind, blocks in (("enc", g.encoder), ("dec", g.decoder)):
            for b, block in enumerate(blocks):
                ops = ", ".join(f"{l.op}→{l.channels}" if l.op != "skip" else f"skip(L{l.source})" for l in block.layers)
                sample = f" | {block.sample.op}→{block.sample.channels}" if block.sample else ""
                fuse = f"fuse→{block.fuse_channels} | " if block.fuse_channels else ""
                lines.append(f"  {kind}{b}: {fuse}{ops}{sample}")
        return lines
    assert isinstance(g, HiNASGenotype)
    widths = " ".join(str(g.base_width * 2 ** w) for w in g.widths)
    lines = [f"space: HiNAS (IR-NAS), {len(g.widths)} cells × {g.nodes} nodes, node widths per layer: {widths}, ASPP: {g.aspp}"]
    for i, node in enumerate(g.cell):
        names = ["h(l-2)", "h(l-1)"] + [f"n{j}" for j in range(len(g.cell))]
        lines.append(f"  n{i} = " + " + ".join(f"{op}({names[j]})" for j, op in zip(node.inputs, node.ops)))
    return lines


def describe_model(source: str, *, size: int = 256) -> list[str]:
    from restore.models.build import build
    from restore.runtime.profile import count_flops, count_parameters

    import torch

    if size < 1:
        raise RestoreError(f"--size must be a positive number of pixels, got {size}")
    label, g, _ = _resolve(source)
    net = build(g).eval()
    in_ch = g.in_channels + int(g.noise_map)
    side = -(-size // net.size_multiple) * net.size_multiple
    flops = count_flops(net, torch.zeros(1, in_ch, side, side))
    params = count_parameters(net)
    lines = [label, f"channels: {g.in_channels} in{' + σ map' if g.noise_map else ''}, {g.out_channels} out; size multiple {net.size_multiple}"]
    lines += summarize_genotype(g)
    lines.append(f"parameters: {params:,} ({params / 1e3:.0f} k)")
    lines.append(f"FLOPs: {flops / (side * side) * 1e6 / 1e9:.2f} G per megapixel ({flops / 1e9:.2f} G at {side}×{side}; 2 FLOPs per multiply-add)")
    return lines


def list_preset_lines() -> list[str]:
    from restore.models.build import list_presets, load_preset

    lines = ["Architecture presets (use with `restore train -m NAME`, `restore info NAME`):"]
    for name in list_presets():
        g = load_preset(name)
        lines.append(f"  {name:<14} {g.space}  {summarize_genotype(g)[0]}")
    return lines


def model_table() -> str:
    from restore.zoo.registry import list_entries

    entries = list_entries()
    if not entries:
        return "No models are shipped yet."
    lines = ["| name | task | channels | range | default | measured |", "|---|---|---|---|---|---|"]
    for e in entries:
        rng = f"{e.level_range[0]:g}–{e.level_range[1]:g}" if e.level_range else "–"
        metrics = "; ".join(f"{k}: {v}" for k, v in e.metrics.items()) or "–"
        lines.append(f"| {e.name} | {e.task} | {'gray' if e.channels == 1 else 'colour'} | {rng} | {'yes' if e.default else ''} | {metrics} |")
    return "\n".join(lines)
