"""Deepening a trained MoD-NAS network without changing what it computes.

Depth search (γ, Eq. 11) removes layers; a removed layer forwards an earlier output.
In our CPU search the γ paths of the levels below full resolution were still close to
uniform when the genotype was taken (0.50 / 0.50, 0.33 / 0.33 / 0.33 at step 300 of
`training/search-modnas-gray`), so "removed" there was a coin flip rather than a finding,
and those levels are cheap: a conv at half resolution costs a quarter of one at full.

`deepen` puts a residual block in every removed layer of the chosen levels. `load_grown`
loads the trained shallow network into the deepened one and starts every new block as an
identity (the last conv of its residual branch is zero), so training continues from
exactly the function the shallow network computed.

Unfolding stages (MoD-NAS Eq. 13, x(t) = δ(t)·y + (1−δ(t))·v(t)) grow the same way: an added
stage copies the last trained U-Net, its 1×1 output conv starts at zero (so v(t) = x(t−1))
and its δ near zero, so the deeper unfolding first passes the trained stage's output through.
A second pass is what a net that under-removes heavy degradation lacks: it sees what the
first one left behind.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch
from torch import nn

from restore.errors import RestoreError
from restore.models.genotype import Block, Layer, ModNASGenotype, load_genotype, save_genotype, validate
from restore.models.ops import Identity, ResBlock

RESIDUAL_OP = "res_block_3x3"
# sigmoid(−9) ≈ 1.2e-4: an added stage mixes back almost none of the input y; not −inf, so
# δ can still learn
NEW_STAGE_DELTA_LOGIT = -9.0


def block_levels(g: ModNASGenotype) -> tuple[list[int], list[int]]:
    """Resolution level (0 = full, k = 1/2^k) of every encoder and decoder block."""
    return list(range(g.levels)), [g.levels - b for b in range(len(g.decoder))]


def _deepen_block(block: Block) -> Block:
    layers = []
    for layer in block.layers:
        if layer.op == "skip":
            # a skip's width is its source's; the derivation only leaves skips on paths of
            # equal width, so the block's identity shortcut applies (checked by load_grown)
            layer = Layer(op=RESIDUAL_OP, channels=layer.channels)
        layers.append(layer)
    return replace(block, layers=tuple(layers))


def deepen(g: ModNASGenotype, *, min_level: int = 1, max_level: int | None = None) -> ModNASGenotype:
    """The genotype with a residual block in every removed layer at levels
    `min_level` … `max_level` (default: down to the coarsest level)."""
    if not isinstance(g, ModNASGenotype):
        raise RestoreError("deepening applies to MoD-NAS genotypes only")
    if not 0 <= min_level <= g.levels:
        raise RestoreError(f"min_level must be in [0, {g.levels}], got {min_level}")
    top = g.levels if max_level is None else max_level
    if not min_level <= top <= g.levels:
        raise RestoreError(f"max_level must be in [{min_level}, {g.levels}], got {max_level}")

    def chosen(level: int) -> bool:
        return min_level <= level <= top

    enc_levels, dec_levels = block_levels(g)
    encoder = tuple(_deepen_block(b) if chosen(lv) else b for b, lv in zip(g.encoder, enc_levels))
    decoder = tuple(_deepen_block(b) if chosen(lv) else b for b, lv in zip(g.decoder, dec_levels))
    suffix = f"deep{min_level}" if max_level is None else f"deep{min_level}-{top}"
    name = f"{g.name}-{suffix}" if g.name else suffix
    return validate(replace(g, encoder=encoder, decoder=decoder, name=name))


def add_stages(g: ModNASGenotype, stages: int) -> ModNASGenotype:
    """The genotype unfolded over more stages T (train it with init_from + grow)."""
    if not isinstance(g, ModNASGenotype):
        raise RestoreError("unfolding stages apply to MoD-NAS genotypes only")
    if stages <= g.stages:
        raise RestoreError(f"stages must be more than the genotype's {g.stages}, got {stages}")
    name = f"{g.name}-t{stages}" if g.name else f"t{stages}"
    return validate(replace(g, stages=stages, name=name))


def _new_blocks(model: nn.Module, missing: set[str]) -> list[tuple[str, ResBlock]]:
    """Residual blocks all of whose tensors are missing from the loaded state (the grown ones)."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, ResBlock):
            keys = {f"{name}.{k}" for k in module.state_dict()}
            if keys <= missing:
                found.append((name, module))
    return found


def load_grown(model: nn.Module, parent_state: dict[str, torch.Tensor]) -> list[str]:
    """Load a shallower network's weights; start the added residual blocks as identities.

    Every tensor of the parent must be used and every missing tensor must belong to an
    added residual block with an identity shortcut or to an added unfolding stage; anything
    else is a mismatch. Returns the names of the added blocks and stages.
    """
    parent_state, new_stages = _with_added_stages(model, parent_state)
    try:
        missing, unexpected = model.load_state_dict(parent_state, strict=False)
    except RuntimeError as e:  # shape mismatches: another width or wiring
        first = str(e).split("\n\t")[1] if "\n\t" in str(e) else str(e)
        raise RestoreError(f"the parent weights do not fit the deepened network: {first}") from None
    if unexpected:
        raise RestoreError(f"the parent weights hold {len(unexpected)} tensors the deepened network has not "
                           f"(first: {unexpected[0]}); it is not a deepening of that network")
    missing_set = set(missing)
    blocks = _new_blocks(model, missing_set)
    covered = {f"{name}.{k}" for name, block in blocks for k in block.state_dict()}
    if missing_set - covered:
        first = sorted(missing_set - covered)[0]
        raise RestoreError(f"the deepened network needs {first}, which the parent weights lack and which "
                           "is not part of an added residual block")
    for name, block in blocks:
        if not isinstance(block.shortcut, Identity):
            raise RestoreError(f"added block {name} changes the width; it cannot start as an identity")
        last = block.body[-1][-1]  # ReLUConv = ReLU → conv
        with torch.no_grad():
            last.weight.zero_()
            if last.bias is not None:
                last.bias.zero_()
    for name in new_stages:
        out = model.get_submodule(name).tail[-1]
        with torch.no_grad():
            out.weight.zero_()
            out.bias.zero_()
    return [name for name, _ in blocks] + new_stages


def _with_added_stages(model: nn.Module, parent_state: dict[str, torch.Tensor]):
    """The parent's weights extended to the model's extra unfolding stages (each a copy of the
    parent's last U-Net, δ near zero), and the names of those stages."""
    delta = parent_state.get("delta_logit")
    unets = getattr(model, "unets", None)
    if delta is None or unets is None or delta.numel() == len(unets):
        return parent_state, []
    have, want = delta.numel(), len(unets)
    if have > want:
        raise RestoreError(f"the parent weights unfold {have} stages, the grown network only {want}")
    last = f"unets.{have - 1}."
    state = dict(parent_state)
    for t in range(have, want):
        state.update({f"unets.{t}.{k[len(last):]}": v.clone() for k, v in parent_state.items() if k.startswith(last)})
    state["delta_logit"] = torch.cat([delta, torch.full((want - have,), NEW_STAGE_DELTA_LOGIT, dtype=delta.dtype)])
    return state, [f"unets.{t}" for t in range(have, want)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m restore.models.grow",
        description="Write a deepened MoD-NAS genotype: a residual block in every removed layer "
                    "at the chosen resolution levels (train it with init_from + grow).",
    )
    parser.add_argument("genotype", help="MoD-NAS genotype JSON")
    parser.add_argument("out", help="where to write the deepened genotype JSON")
    parser.add_argument("--min-level", type=int, default=None,
                        help="finest level to deepen: 0 = full resolution, 1 = half (the default "
                             "unless only --stages is given)")
    parser.add_argument("--max-level", type=int, default=None,
                        help="coarsest level to deepen (default: the coarsest there is)")
    parser.add_argument("--stages", type=int, default=None,
                        help="unfold this many stages T (more than the genotype's: the added ones "
                             "start as pass-throughs); alone, it deepens no level")
    args = parser.parse_args(argv)
    try:
        g = load_genotype(args.genotype)
        if args.stages is not None:
            g = add_stages(g, args.stages)
        if args.min_level is not None or args.max_level is not None or args.stages is None:
            g = deepen(g, min_level=1 if args.min_level is None else args.min_level, max_level=args.max_level)
        print(save_genotype(g, args.out))
    except RestoreError as e:
        parser.exit(2, f"error: {e}\n")


if __name__ == "__main__":
    main()
