"""MoD-NAS: model-guided U-Net search space (supernet, derivation rules, derived network).

The denoiser f_DN is a U-Net of encoding blocks (normal layers + a down-sampling layer)
and decoding blocks (a fusion conv after the skip concatenation, normal layers, an
up-sampling layer; the last block has none). T U-Nets are unfolded as in Eq. 6:

    v(t) = f_DN^(t)(x(t-1)),   x(t) = δ(t)·y + (1 − δ(t))·v(t),   x(0) = y.

Search parameters (one set shared by all stages, so a single architecture is derived):
  α  per layer, softmax over candidate ops (Eq. 7–9);
  β  per output channel of every candidate op (width, Eq. 10);
  γ  per layer, softmax over dense paths from every earlier layer of the block (Eq. 11);
  δ  per stage, the unfolding relaxation weight (kept in (0, 1) by a sigmoid).

Design decisions the paper leaves open (documented here, tested in tests/test_modnas.py):
- The start part is two 3×3 convs (input → C → C), as Table 7's first two rows.
- The U-Net skip at each level is the encoder block's *input* (the head output, or the
  previous level's down-sampled features): with it, every fusion width of Table 8 is
  reproduced exactly (96, 96, 88); the fusion conv maps concat(up, skip) to half its width
  (Tables 7 and 8: 72→36, 96→48, 88→44). Table 7's fusion widths are not consistent with
  any single wiring of its own rows, so that preset differs there (see presets/).
- The tail is ReLU → 1×1 conv; every U-Net predicts a residual added to its input image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from restore.errors import RestoreError
from restore.models.genotype import Block, Layer, ModNASGenotype, validate_modnas
from restore.models.ops import MODNAS_DOWN_OPS, MODNAS_NORMAL_OPS, MODNAS_UP_OPS, make_op

DELTA_INIT_LOGIT = -2.0  # δ ≈ 0.12 at start: trust the denoiser, keep a little of y


# =========================================================================== derivation rules


def derive_width(beta: np.ndarray | torch.Tensor, *, keep: float = 0.9, multiple: int = 8) -> int:
    """Eq. 10: the smallest M̂, a multiple of `multiple`, whose top-M̂ |β| hold `keep` of Σ|β|."""
    b = np.sort(np.abs(np.asarray(torch.as_tensor(beta).detach().cpu(), dtype=np.float64)))[::-1]
    total = b.sum()
    if total <= 0:
        return min(multiple, len(b))
    cumulative = np.cumsum(b)
    needed = int(np.searchsorted(cumulative, keep * total - 1e-12) + 1)
    return min(len(b), multiple * math.ceil(needed / multiple))


def derive_depth(gammas: list[torch.Tensor]) -> list[int]:
    """Eq. 11 → the most probable path per layer: source index for each layer ℓ = 1..n.

    Source ℓ means "keep the layer's op" (on the previous output); i < ℓ means the layer
    is removed and its output is L_i."""
    return [int(torch.argmax(g).item()) for g in gammas]


def live_layers(sources: list[int]) -> set[int]:
    """Layers (1-based) whose op output reaches the block output."""
    live: set[int] = set()
    node = len(sources)
    while node > 0:
        src = sources[node - 1]
        if src == node:
            live.add(node)
            node -= 1
        else:
            node = src
    return live


# =========================================================================== supernet


def _zero_bias(tail: nn.Sequential) -> nn.Sequential:
    # a random output bias shifts the whole residual at init (up to ±0.35 at C = 8), which
    # makes short searches and trainings compare initialisations instead of architectures
    nn.init.zeros_(tail[-1].bias)
    return tail


class MixedLayer(nn.Module):
    """Σ_o softmax(α)_o · (o(x) ⊙ β_o): candidate ops with per-channel width gates (Eq. 8, 10)."""

    def __init__(self, role: str, candidates: tuple[str, ...], c_in: int, c_out: int):
        super().__init__()
        self.role = role
        self.candidates = candidates
        self.ops = nn.ModuleList(make_op(role, name, c_in, c_out) for name in candidates)

    def forward(self, x, weights, betas, size=None):
        out = None
        for w, beta, op in zip(weights, betas, self.ops):
            y = op(x) if size is None else op(x, size)
            y = y * (w * beta).view(1, -1, 1, 1)
            out = y if out is None else out + y
        return out


@dataclass(frozen=True)
class SearchSpaceConfig:
    in_channels: int = 1
    out_channels: int = 1
    noise_map: bool = False
    channels: int = 48  # C
    levels: int = 3  # encoder blocks (Table 7 has three)
    layers_per_block: int = 3
    stages: int = 2  # T during search
    unfold: bool = True  # False: plain differentiable NAS (one U-Net, no δ) for the ablation
    depth: str = "dense"  # "dense" (γ, the paper) or "skip" (skip among candidates, ablation)
    normal_ops: tuple[str, ...] = MODNAS_NORMAL_OPS
    down_ops: tuple[str, ...] = MODNAS_DOWN_OPS
    up_ops: tuple[str, ...] = MODNAS_UP_OPS

    def __post_init__(self):
        if self.depth not in ("dense", "skip"):
            raise RestoreError(f"depth search must be 'dense' or 'skip', got {self.depth!r}")
        if not self.unfold and self.stages != 1:
            object.__setattr__(self, "stages", 1)
        if self.depth == "skip" and "skip" not in self.normal_ops:
            object.__setattr__(self, "normal_ops", tuple(self.normal_ops) + ("skip",))


def layer_keys(levels: int, layers: int) -> list[tuple[str, str]]:
    """(key, role) of every searchable layer, in forward order."""
    keys: list[tuple[str, str]] = []
    for b in range(levels):
        keys += [(f"enc{b}.l{i}", "normal") for i in range(layers)] + [(f"enc{b}.down", "down")]
    for b in range(levels + 1):
        keys += [(f"dec{b}.l{i}", "normal") for i in range(layers)]
        if b < levels:
            keys.append((f"dec{b}.up", "up"))
    return keys


class SuperUNet(nn.Module):
    """One stage's weights. Architecture parameters are passed in by the supernet."""

    def __init__(self, cfg: SearchSpaceConfig):
        super().__init__()
        c, cin = cfg.channels, cfg.in_channels + int(cfg.noise_map)
        self.out_channels = cfg.out_channels
        self.head = nn.Sequential(nn.Conv2d(cin, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1))
        candidates = {"normal": cfg.normal_ops, "down": cfg.down_ops, "up": cfg.up_ops}
        self.layers = nn.ModuleDict(
            {k.replace(".", "_"): MixedLayer(role, candidates[role], c, c) for k, role in layer_keys(cfg.levels, cfg.layers_per_block)}
        )
        self.fuse = nn.ModuleList(nn.Conv2d(2 * c, c, 3, padding=1) for _ in range(cfg.levels))
        self.tail = _zero_bias(nn.Sequential(nn.ReLU(), nn.Conv2d(c, cfg.out_channels, 1)))
        self.cfg = cfg

    def _block(self, prefix: str, h, arch):
        outs = [h]
        for i in range(self.cfg.layers_per_block):
            key = f"{prefix}.l{i}"
            z = self.layers[key.replace(".", "_")](outs[-1], *arch.op_weights(key))
            if self.cfg.depth == "dense":
                p = arch.path_weights(prefix, i)  # p[0..i] over earlier outputs, p[i+1] over z
                z = sum(p[j] * outs[j] for j in range(i + 1)) + p[i + 1] * z
            outs.append(z)
        return outs[-1]

    def forward(self, x, arch):
        h = self.head(x)
        skips = []
        for b in range(self.cfg.levels):
            skips.append(h)
            h = self._block(f"enc{b}", h, arch)
            h = self.layers[f"enc{b}_down"](h, *arch.op_weights(f"enc{b}.down"))
        for b in range(self.cfg.levels + 1):
            if b > 0:
                h = self.fuse[b - 1](torch.cat([h, skips[-b]], dim=1))
            h = self._block(f"dec{b}", h, arch)
            if b < self.cfg.levels:
                target = skips[-(b + 1)]
                h = self.layers[f"dec{b}_up"](h, *arch.op_weights(f"dec{b}.up"), size=target.shape[-2:])
        return x[:, : self.out_channels] + self.tail(h)


class ModNASSupernet(nn.Module):
    """The searchable network: T unfolded SuperUNets sharing one set of α/β/γ."""

    def __init__(self, cfg: SearchSpaceConfig | None = None, **overrides):
        super().__init__()
        cfg = cfg or SearchSpaceConfig(**overrides)
        self.cfg = cfg
        self.stages = nn.ModuleList(SuperUNet(cfg) for _ in range(cfg.stages))
        keys = layer_keys(cfg.levels, cfg.layers_per_block)
        n_ops = {"normal": len(cfg.normal_ops), "down": len(cfg.down_ops), "up": len(cfg.up_ops)}
        # small random α (DARTS init) so no op is preferred; β = 1 (all channels on)
        self.alpha = nn.ParameterDict({k.replace(".", "_"): nn.Parameter(1e-3 * torch.randn(n_ops[r])) for k, r in keys})
        self.beta = nn.ParameterDict({k.replace(".", "_"): nn.Parameter(torch.ones(n_ops[r], cfg.channels)) for k, r in keys})
        blocks = [f"enc{b}" for b in range(cfg.levels)] + [f"dec{b}" for b in range(cfg.levels + 1)]
        self.gamma = nn.ParameterDict(
            {f"{blk}_l{i}": nn.Parameter(1e-3 * torch.randn(i + 2)) for blk in blocks for i in range(cfg.layers_per_block)}
            if cfg.depth == "dense"
            else {}
        )
        self.delta_logit = nn.Parameter(torch.full((cfg.stages,), DELTA_INIT_LOGIT)) if cfg.unfold else None

    # -- parameter groups (pt.darts style) ----------------------------------------------
    def weights(self):
        return self.stages.parameters()

    def named_arch_parameters(self):
        for group in ("alpha", "beta", "gamma"):
            for k, p in getattr(self, group).items():
                yield f"{group}.{k}", p
        if self.delta_logit is not None:
            yield "delta", self.delta_logit

    def arch_parameters(self):
        return [p for _, p in self.named_arch_parameters()]

    # -- architecture views used by SuperUNet ----------------------------------------------
    def op_weights(self, key: str):
        k = key.replace(".", "_")
        return F.softmax(self.alpha[k], dim=0), self.beta[k]

    def path_weights(self, block: str, i: int):
        return F.softmax(self.gamma[f"{block}_l{i}"], dim=0)

    def deltas(self) -> torch.Tensor | None:
        return None if self.delta_logit is None else torch.sigmoid(self.delta_logit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.cfg.out_channels
        y, extra = x[:, :c], x[:, c:]
        xt = y
        deltas = self.deltas()
        for t, stage in enumerate(self.stages):
            v = stage(torch.cat([xt, extra], dim=1) if extra.shape[1] else xt, self)
            xt = v if deltas is None else deltas[t] * y + (1 - deltas[t]) * v
        return xt

    # -- derivation -------------------------------------------------------------------------
    def genotype(self, *, stages: int = 1, keep: float = 0.9, multiple: int = 8, name: str = "") -> ModNASGenotype:
        """Derive depth (γ), then ops (α), then widths (β) — in the order of Algorithm 1."""
        cfg = self.cfg
        with torch.no_grad():
            enc = tuple(self._derive_block(f"enc{b}", f"enc{b}.down", "down", keep, multiple) for b in range(cfg.levels))
            dec = []
            for b in range(cfg.levels + 1):
                up = f"dec{b}.up" if b < cfg.levels else None
                dec.append(self._derive_block(f"dec{b}", up, "up", keep, multiple))
        return _assign_fusion_widths(
            ModNASGenotype(
                encoder=enc,
                decoder=tuple(dec),
                head_channels=cfg.channels,
                stages=stages,
                in_channels=cfg.in_channels,
                out_channels=cfg.out_channels,
                noise_map=cfg.noise_map,
                name=name,
            )
        )

    def _chosen(self, key: str, candidates: tuple[str, ...], keep: float, multiple: int) -> Layer:
        k = key.replace(".", "_")
        idx = int(torch.argmax(self.alpha[k]).item())
        return Layer(op=candidates[idx], channels=derive_width(self.beta[k][idx], keep=keep, multiple=multiple))

    def _derive_block(self, prefix: str, sample_key: str | None, sample_role: str, keep: float, multiple: int) -> Block:
        cfg = self.cfg
        n = cfg.layers_per_block
        if cfg.depth == "dense":
            sources = derive_depth([self.gamma[f"{prefix}_l{i}"] for i in range(n)])
        else:
            sources = [i + 1 for i in range(n)]
        live = live_layers(sources)
        layers: list[Layer] = []
        for i in range(n):
            chosen = self._chosen(f"{prefix}.l{i}", cfg.normal_ops, keep, multiple)
            if sources[i] == i + 1 and (i + 1) in live and chosen.op != "skip":
                layers.append(chosen)
            else:
                src = sources[i] if sources[i] != i + 1 else i  # dead or skip op: identity of the previous
                layers.append(Layer(op="skip", channels=0, source=src))
        sample = None
        if sample_key is not None:
            candidates = cfg.down_ops if sample_role == "down" else cfg.up_ops
            sample = self._chosen(sample_key, candidates, keep, multiple)
        return Block(layers=tuple(layers), sample=sample)


def _resolve_skip_widths(layers: tuple[Layer, ...], c_in: int) -> tuple[tuple[Layer, ...], int]:
    """Fill in the width of removed layers (the width of their source) and return the block's output width."""
    widths = [c_in]
    resolved = []
    for layer in layers:
        if layer.op == "skip":
            layer = Layer(op="skip", channels=widths[layer.source], source=layer.source)
        widths.append(layer.channels)
        resolved.append(layer)
    return tuple(resolved), widths[-1]


def _assign_fusion_widths(g: ModNASGenotype) -> ModNASGenotype:
    """Resolve skipped-layer widths and set each fusion conv to half of its concat width."""
    width = g.head_channels
    enc, skips = [], []
    for block in g.encoder:
        skips.append(width)
        layers, width = _resolve_skip_widths(block.layers, width)
        enc.append(Block(layers=layers, sample=block.sample))
        width = block.sample.channels
    dec = []
    for b, block in enumerate(g.decoder):
        fuse = None
        if b > 0:
            fuse = max(8, (width + skips[-b]) // 2)
            width = fuse
        layers, width = _resolve_skip_widths(block.layers, width)
        dec.append(Block(layers=layers, sample=block.sample, fuse_channels=fuse))
        if block.sample is not None:
            width = block.sample.channels
    from dataclasses import replace

    return replace(g, encoder=tuple(enc), decoder=tuple(dec))


# =========================================================================== derived network


class DerivedBlock(nn.Module):
    """Normal layers of a derived block; removed layers forward an earlier output (static indices)."""

    def __init__(self, layers: tuple[Layer, ...], c_in: int):
        super().__init__()
        widths = [c_in]
        ops, self.sources = [], []
        for i, layer in enumerate(layers):
            if layer.op == "skip":
                ops.append(nn.Identity())
                self.sources.append(layer.source)
                widths.append(widths[layer.source])
            else:
                ops.append(make_op("normal", layer.op, widths[-1], layer.channels))
                self.sources.append(-1)
                widths.append(layer.channels)
        self.ops = nn.ModuleList(ops)
        self.out_channels = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [x]
        for op, src in zip(self.ops, self.sources):
            outs.append(op(outs[-1]) if src < 0 else outs[src])
        return outs[-1]


class DerivedUNet(nn.Module):
    def __init__(self, g: ModNASGenotype):
        super().__init__()
        c, cin = g.head_channels, g.in_channels + int(g.noise_map)
        self.out_channels = g.out_channels
        self.head = nn.Sequential(nn.Conv2d(cin, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1))
        self.enc_blocks, self.downs = nn.ModuleList(), nn.ModuleList()
        skip_widths, width = [], c
        for block in g.encoder:
            skip_widths.append(width)
            body = DerivedBlock(block.layers, width)
            self.enc_blocks.append(body)
            self.downs.append(make_op("down", block.sample.op, body.out_channels, block.sample.channels))
            width = block.sample.channels
        self.fuses, self.dec_blocks, self.ups = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for b, block in enumerate(g.decoder):
            if b > 0:
                self.fuses.append(nn.Conv2d(width + skip_widths[-b], block.fuse_channels, 3, padding=1))
                width = block.fuse_channels
            body = DerivedBlock(block.layers, width)
            self.dec_blocks.append(body)
            width = body.out_channels
            if block.sample is not None:
                self.ups.append(make_op("up", block.sample.op, width, block.sample.channels))
                width = block.sample.channels
        self.tail = _zero_bias(nn.Sequential(nn.ReLU(), nn.Conv2d(width, g.out_channels, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        skips = []
        for body, down in zip(self.enc_blocks, self.downs):
            skips.append(h)
            h = down(body(h))
        for b, body in enumerate(self.dec_blocks):
            if b > 0:
                h = self.fuses[b - 1](torch.cat([h, skips[-b]], dim=1))
            h = body(h)
            if b < len(self.ups):
                h = self.ups[b](h, skips[-(b + 1)].shape[-2:])
        return x[:, : self.out_channels] + self.tail(h)


class ModNASNet(nn.Module):
    """A derived MoD-NAS network: T unfolded U-Nets of one genotype, each with its own weights."""

    def __init__(self, g: ModNASGenotype):
        super().__init__()
        validate_modnas(g)
        self.genotype = g
        self.unets = nn.ModuleList(DerivedUNet(g) for _ in range(g.stages))
        self.delta_logit = nn.Parameter(torch.full((g.stages,), DELTA_INIT_LOGIT))
        # power-of-two sizes keep every level's up/down exact; the runtime pads to this
        self.size_multiple = 2 ** g.levels
        self.in_channels = g.in_channels + int(g.noise_map)
        self.out_channels = g.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.out_channels
        y = x[:, :c]
        extra = x[:, c:]
        conditioned = extra.shape[1] > 0
        deltas = torch.sigmoid(self.delta_logit)
        xt = y
        for t, unet in enumerate(self.unets):
            v = unet(torch.cat([xt, extra], dim=1) if conditioned else xt)
            xt = deltas[t] * y + (1 - deltas[t]) * v
        return xt


def build_modnas(g: ModNASGenotype) -> ModNASNet:
    return ModNASNet(g)
