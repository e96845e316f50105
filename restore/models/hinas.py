"""HiNAS / IR-NAS: hierarchical search of cell structure (α) and per-layer width (β).

Search space (paper §3; equation numbers refer to it)
    * Start part: input conv → two ReLU-conv-BN convs (3×3, ``stem_channels``).
    * Middle part: ``layers`` layers, each with three cells ``C_l^i`` at levels i = 0, 1, 2
      (node width ``2^i·W``; the cell output is the concat of its N nodes, ``N·2^i·W``
      channels, Eq. 3). There is no spatial down-sampling anywhere.
    * ``C_l^i`` gets h_{l-1} = Σ_k β_k^i f_{l-1}^k over the existing k ∈ {i-1, i, i+1}
      (1×1-projected outputs of layer l-1) and h_{l-2} = the 1×1-projected output of
      ``C_{l-2}^i`` (Eq. 5). With ``shared_cells=True`` there is one cell per width per
      layer whose weights serve every incoming path (the paper's memory saving);
      ``shared_cells=False`` is the Auto-DeepLab variant of Eq. 6 (one cell per path,
      outputs β-summed).
    * Stem stand-in: the stem output stands in for the missing layers -1 and -2 (projected
      to each width). Layer 0 therefore has a single source per cell and no β: its
      "transition row" (see `HiNASSupernet.betas`) is all ones.
    * End part: concat of the last layer's three outputs → 3×3 conv → ``out_channels``.

Both the supernet and the derived network predict the *residual*: output = input image +
prediction (DnCNN-style; with a noise-level map only the image channels get the residual).

α is one (edges × ops) table shared by every cell (one searched cell, stacked, as in
DARTS); β is one 3×3 table per layer ≥ 1, softmaxed over each target level's valid
incoming levels. Decoding: DARTS top-2 inputs per node (`genotype`), Viterbi over β for
the widths (`viterbi_widths`). The derived `HiNASNet` adds an ASPP module after the last
cell, as the paper does.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from restore.errors import RestoreError
from restore.models.genotype import HiNASGenotype, Node, validate
from restore.models.ops import HINAS_OPS, check_op, make_op

__all__ = [
    "ASPP",
    "HiNASNet",
    "HiNASSupernet",
    "MixedOp",
    "PAPER_SETTINGS",
    "SuperCell",
    "build_hinas",
    "derive_cell",
    "viterbi_widths",
]

LEVELS = 3  # widths W, 2W, 4W

PAPER_SETTINGS: dict[str, dict[str, int]] = {
    "denoise": dict(layers=4, nodes=5, base_width=10),
    "derain": dict(layers=3, nodes=4, base_width=10),
}

# --------------------------------------------------------------------------- building blocks


def _relu_conv_bn(c_in: int, c_out: int, kernel: int, *, affine: bool, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.ReLU(inplace=False),
        nn.Conv2d(c_in, c_out, kernel, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out, affine=affine),
    )


def _stem(in_channels: int, channels: int) -> nn.Sequential:
    """Start part: input conv (no ReLU on the raw image) then two ReLU-conv-BN convs."""
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels),
        _relu_conv_bn(channels, channels, 3, affine=True),
        _relu_conv_bn(channels, channels, 3, affine=True),
    )


def _head(channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(channels, out_channels, 3, padding=1))


def _node_inputs(nodes: int) -> list[tuple[int, int]]:
    """Edges (node i, input j) in α row order; input 0 = h_{l-2}, 1 = h_{l-1}, 2+k = node k."""
    return [(i, j) for i in range(nodes) for j in range(i + 2)]


def _incoming_levels(level: int, n_sources: int) -> list[int]:
    """Levels of the previous layer feeding ``level`` (the stem is a single source)."""
    if n_sources == 1:
        return [0]
    return [k for k in (level - 1, level, level + 1) if 0 <= k < LEVELS]


def _transition_mask() -> torch.Tensor:
    """mask[i, k]: level k at layer l-1 may feed level i at layer l (|i - k| <= 1)."""
    idx = torch.arange(LEVELS)
    return (idx[:, None] - idx[None, :]).abs() <= 1


def _check_image_channels(in_channels: int, out_channels: int) -> None:
    if in_channels != out_channels:
        raise RestoreError(
            f"HiNAS predicts a residual, so in_channels must equal out_channels "
            f"(got {in_channels} and {out_channels})"
        )


def _add_residual(x: torch.Tensor, prediction: torch.Tensor, image_channels: int) -> torch.Tensor:
    # with a noise-level map the last input channel is σ/255, which gets no residual
    return x[:, :image_channels] + prediction


# --------------------------------------------------------------------------- supernet


class MixedOp(nn.Module):
    """One supercell edge: Σ_k w_k · O_k(x) with w = softmax(α_edge) (Eq. 2).

    The weights are passed in because α is shared by all cells. Ops use non-affine BN,
    the DARTS convention during search (a learnable BN scale would fight α).
    """

    def __init__(self, channels: int, primitives: Sequence[str]):
        super().__init__()
        self.ops = nn.ModuleList(make_op("cell", name, channels, affine=False) for name in primitives)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(w * op(x) for w, op in zip(weights, self.ops))


class SuperCell(nn.Module):
    """Node i = Σ_{j ∈ {s0, s1, nodes < i}} MixedOp_{j→i}(x_j) (Eq. 1); output = concat (Eq. 3).

    ``s0`` = h_{l-2} and ``s1`` = h_{l-1}, both already projected to ``channels_per_node``;
    the output has ``nodes · channels_per_node`` channels.
    """

    def __init__(self, channels_per_node: int, nodes: int, primitives: Sequence[str]):
        super().__init__()
        self.nodes = nodes
        self.edges = nn.ModuleList(MixedOp(channels_per_node, primitives) for _ in _node_inputs(nodes))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
        states = [s0, s1]
        e = 0
        for _ in range(self.nodes):
            n_in = len(states)
            states.append(sum(self.edges[e + j](x, alphas[e + j]) for j, x in enumerate(states)))
            e += n_in
        return torch.cat(states[2:], dim=1)


class _SuperLayer(nn.Module):
    """One supernet layer: a cell per level, each fed by the β-mixed previous layer.

    ``prev_channels`` / ``prev2_channels`` are the channels of the outputs of layers l-1
    and l-2: one entry when that layer is the stem, three otherwise.
    """

    def __init__(self, prev_channels: Sequence[int], prev2_channels: Sequence[int], *,
                 base_width: int, nodes: int, primitives: Sequence[str], shared: bool):
        super().__init__()
        self.shared = shared
        self.n_prev, self.n_prev2 = len(prev_channels), len(prev2_channels)
        self.in_proj = nn.ModuleList()
        self.skip_proj = nn.ModuleList()
        self.cells = nn.ModuleList()
        for i in range(LEVELS):
            width = base_width * 2**i
            sources = _incoming_levels(i, self.n_prev)
            self.in_proj.append(nn.ModuleList(
                _relu_conv_bn(prev_channels[k], width, 1, affine=False) for k in sources))
            self.skip_proj.append(_relu_conv_bn(prev2_channels[self._prev2_index(i)], width, 1, affine=False))
            n_cells = 1 if shared else len(sources)
            cells = [SuperCell(width, nodes, primitives) for _ in range(n_cells)]
            self.cells.append(cells[0] if shared else nn.ModuleList(cells))

    def _prev2_index(self, level: int) -> int:
        return level if self.n_prev2 == LEVELS else 0

    def forward(self, prev: list[torch.Tensor], prev2: list[torch.Tensor],
                beta: torch.Tensor | None, alphas: torch.Tensor) -> list[torch.Tensor]:
        """``beta[i, k]``: softmaxed weight of source level k for target level i (None: stem)."""
        outs = []
        for i in range(LEVELS):
            s0 = self.skip_proj[i](prev2[self._prev2_index(i)])
            sources = _incoming_levels(i, self.n_prev)
            feats = [proj(prev[k]) for proj, k in zip(self.in_proj[i], sources)]
            weights = None if beta is None else [beta[i, k] for k in sources]
            if self.shared:  # Eq. 5: mix the inputs, run the one cell once
                outs.append(self.cells[i](s0, _mix(weights, feats), alphas))
            else:  # Eq. 6: a cell per path, mix the outputs
                outs.append(_mix(weights, [cell(s0, f, alphas) for f, cell in zip(feats, self.cells[i])]))
        return outs


def _mix(weights: list[torch.Tensor] | None, tensors: list[torch.Tensor]) -> torch.Tensor:
    """β-weighted sum; ``None`` = the single stem source, taken as is."""
    if weights is None:
        return tensors[0]
    return sum(w * t for w, t in zip(weights, tensors))


class HiNASSupernet(nn.Module):
    """The IR-NAS supernet (see the module docstring). Input: N×(C + noise_map)×H×W."""

    size_multiple = 1

    def __init__(self, in_channels: int = 1, out_channels: int = 1, *, noise_map: bool = False,
                 layers: int = 4, nodes: int = 5, base_width: int = 10, stem_channels: int = 64,
                 primitives: Sequence[str] = HINAS_OPS, shared_cells: bool = True):
        super().__init__()
        _check_image_channels(in_channels, out_channels)
        for name, value in (("layers", layers), ("nodes", nodes), ("base_width", base_width),
                            ("stem_channels", stem_channels)):
            if value < 1:
                raise RestoreError(f"HiNAS supernet: {name} must be at least 1, got {value}")
        for name in primitives:
            check_op("cell", name)
        if not any(p != "none" for p in primitives):
            raise RestoreError("HiNAS supernet needs at least one op other than 'none'")

        self.in_channels, self.out_channels, self.noise_map = in_channels, out_channels, noise_map
        self.layers, self.nodes, self.base_width = layers, nodes, base_width
        self.stem_channels, self.primitives, self.shared_cells = stem_channels, tuple(primitives), shared_cells

        self.stem = _stem(in_channels + int(noise_map), stem_channels)
        cell_out = [nodes * base_width * 2**i for i in range(LEVELS)]
        prev, prev2 = [stem_channels], [stem_channels]
        self.body = nn.ModuleList()
        for _ in range(layers):
            self.body.append(_SuperLayer(prev, prev2, base_width=base_width, nodes=nodes,
                                          primitives=self.primitives, shared=shared_cells))
            prev, prev2 = cell_out, prev
        self.head = _head(sum(cell_out), out_channels)

        # DARTS init: near-uniform softmax, tiny noise to break exact ties
        self.alpha = nn.Parameter(1e-3 * torch.randn(len(_node_inputs(nodes)), len(self.primitives)))
        self.beta = nn.Parameter(1e-3 * torch.randn(layers - 1, LEVELS, LEVELS))  # [layer-1, target, source]
        self.register_buffer("beta_mask", _transition_mask(), persistent=False)

    # ------------------------------------------------------------------ parameter groups

    def named_arch_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        yield "alpha", self.alpha
        yield "beta", self.beta

    def arch_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_arch_parameters()]

    def weights(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    # ------------------------------------------------------------------ architecture weights

    def alphas(self) -> torch.Tensor:
        """softmax(α) per edge: (edges × ops), edges in (node, input) order."""
        return self.alpha.softmax(dim=-1)

    def _beta_weights(self) -> torch.Tensor:
        """(layers-1) × target × source, softmaxed over each target's valid sources."""
        return self.beta.masked_fill(~self.beta_mask, float("-inf")).softmax(dim=-1)

    def betas(self) -> list[torch.Tensor]:
        """Per-layer transition matrices T_l[i_prev, i] (0 where not connected).

        Layer 0 is a 1×3 row of ones: every layer-0 cell has the stem as its only source,
        so each stem → level edge has weight 1 (the supernet expresses no preference).
        """
        row = torch.ones(1, LEVELS, device=self.beta.device, dtype=self.beta.dtype)
        return [row] + list(self._beta_weights().transpose(1, 2).unbind(0))

    # ------------------------------------------------------------------ forward / decoding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alphas, betas = self.alphas(), self._beta_weights()
        stem = self.stem(x)
        prev, prev2 = [stem], [stem]  # the stem stands in for layers -1 and -2
        for l, layer in enumerate(self.body):
            out = layer(prev, prev2, betas[l - 1] if l else None, alphas)
            prev, prev2 = out, prev
        return _add_residual(x, self.head(torch.cat(prev, dim=1)), self.in_channels)

    def genotype(self, name: str = "") -> HiNASGenotype:
        transitions = [t.detach().cpu().double().numpy() for t in self.betas()]
        return HiNASGenotype(
            cell=derive_cell(self.alphas().detach().cpu().numpy(), self.primitives, self.nodes),
            widths=tuple(viterbi_widths(transitions)),
            base_width=self.base_width,
            stem_channels=self.stem_channels,
            aspp=True,
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            noise_map=self.noise_map,
            name=name,
        )


# --------------------------------------------------------------------------- decoding


def derive_cell(alphas: np.ndarray, primitives: Sequence[str], nodes: int) -> tuple[Node, ...]:
    """DARTS rule: per node, the two inputs whose strongest non-``none`` op weighs most.

    Ties go to the earlier input / the earlier op (stable order); kept inputs are listed
    in ascending order.
    """
    alphas = np.asarray(alphas, dtype=np.float64)
    edges = _node_inputs(nodes)
    if alphas.shape != (len(edges), len(primitives)):
        raise RestoreError(f"α has shape {alphas.shape}, expected {(len(edges), len(primitives))}")
    usable = [k for k, p in enumerate(primitives) if p != "none"]
    if not usable:
        raise RestoreError("cannot derive a cell: every candidate op is 'none'")
    cell, e = [], 0
    for i in range(nodes):
        rows = alphas[e:e + i + 2, usable]
        best = [int(np.argmax(r)) for r in rows]
        strength = [r[b] for r, b in zip(rows, best)]
        keep = sorted(sorted(range(i + 2), key=lambda j: -strength[j])[:2])
        cell.append(Node(inputs=tuple(keep), ops=tuple(primitives[usable[best[j]]] for j in keep)))
        e += i + 2
    return tuple(cell)


def _start_scores(first: np.ndarray) -> np.ndarray:
    """Log-probabilities of layer 0's levels from the first transition entry."""
    if first.shape in ((LEVELS,), (1, LEVELS)):
        return _log(first.reshape(LEVELS))
    if first.shape == (LEVELS, LEVELS):
        # the stem stands in for every previous level: the best edge into each level
        return _log(np.where(_transition_mask().numpy().T, first, 0.0)).max(axis=0)
    raise RestoreError(f"the first transition must be a row of {LEVELS} or a {LEVELS}×{LEVELS} matrix, got {first.shape}")


def _log(p: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise RestoreError("transition probabilities must be finite and non-negative")
    with np.errstate(divide="ignore"):
        return np.log(p)


def _argmax_first(scores: np.ndarray, tol: float = 1e-9) -> int:
    """Index of the maximum; near-ties (float noise) go to the smallest index = width."""
    return int(np.flatnonzero(scores >= scores.max() - tol)[0])


def viterbi_widths(transitions: Sequence[np.ndarray]) -> list[int]:
    """Most probable width-level path (paper §3.2: β as probabilities, Viterbi decoding).

    ``transitions[l][i_prev, i]`` is the probability of going from level i_prev at layer
    l-1 to level i at layer l; entries with |i - i_prev| > 1 are ignored (not connected).
    ``transitions[0]`` is the stem's row (shape (3,) or (1, 3)); a 3×3 first matrix is
    read as the stem standing in for every previous level (best entry of each column).
    Works in log space; ties go to the smaller width.
    """
    if len(transitions) == 0:
        raise RestoreError("viterbi_widths needs at least one layer")
    allowed = _transition_mask().numpy().T  # [i_prev, i]
    score = _start_scores(np.asarray(transitions[0], dtype=np.float64))
    back: list[list[int]] = []
    for l, t in enumerate(transitions[1:], start=1):
        t = np.asarray(t, dtype=np.float64)
        if t.shape != (LEVELS, LEVELS):
            raise RestoreError(f"transition {l} must be {LEVELS}×{LEVELS}, got {t.shape}")
        cand = score[:, None] + np.where(allowed, _log(t), -np.inf)  # [i_prev, i]
        prev = [_argmax_first(cand[:, i]) for i in range(LEVELS)]
        back.append(prev)
        score = np.array([cand[p, i] for i, p in enumerate(prev)])
    if not np.isfinite(score.max()):
        raise RestoreError("no width path has non-zero probability")
    path = [_argmax_first(score)]
    for prev in reversed(back):
        path.append(prev[path[-1]])
    return path[::-1]


# --------------------------------------------------------------------------- derived network


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: parallel ReLU-conv-BN branches, concat, 1×1 projection.

    A 1×1 branch for rate 1 and a dilated 3×3 branch per rate > 1. Deliberately no global
    image-pooling branch: it would make each output pixel depend on the whole input, so
    tiled inference would differ from whole-image inference.
    """

    def __init__(self, in_channels: int, out_channels: int, rates: Sequence[int] = (1, 2, 4, 8)):
        super().__init__()
        if not rates or any(r < 1 for r in rates):
            raise RestoreError(f"ASPP rates must be positive integers, got {tuple(rates)}")
        self.branches = nn.ModuleList(
            _relu_conv_bn(in_channels, out_channels, 1 if r == 1 else 3, affine=True, dilation=r)
            for r in rates
        )
        self.project = _relu_conv_bn(len(rates) * out_channels, out_channels, 1, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([b(x) for b in self.branches], dim=1))


class CompactCell(nn.Module):
    """A derived cell: each node sums its two kept inputs through their ops; output = concat."""

    def __init__(self, channels: int, cell: Sequence[Node]):
        super().__init__()
        self.inputs = [tuple(node.inputs) for node in cell]
        self.ops = nn.ModuleList(
            nn.ModuleList(make_op("cell", op, channels, affine=True) for op in node.ops) for node in cell
        )

    def forward(self, s0: torch.Tensor | None, s1: torch.Tensor | None) -> torch.Tensor:
        states = [s0, s1]
        for inputs, ops in zip(self.inputs, self.ops):
            states.append(ops[0](states[inputs[0]]) + ops[1](states[inputs[1]]))
        return torch.cat(states[2:], dim=1)


class _DerivedLayer(nn.Module):
    """Projects h_{l-2}, h_{l-1} to the cell width (only those the cell reads) and runs it."""

    def __init__(self, prev2_channels: int, prev_channels: int, width: int, cell: Sequence[Node]):
        super().__init__()
        used = {j for node in cell for j in node.inputs}
        # an unread input gets no projection: no dead parameters (DDP, param counts)
        self.proj0 = _relu_conv_bn(prev2_channels, width, 1, affine=True) if 0 in used else None
        self.proj1 = _relu_conv_bn(prev_channels, width, 1, affine=True) if 1 in used else None
        self.cell = CompactCell(width, cell)

    def forward(self, prev2: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        s0 = self.proj0(prev2) if self.proj0 is not None else None
        s1 = self.proj1(prev) if self.proj1 is not None else None
        return self.cell(s0, s1)


class HiNASNet(nn.Module):
    """The derived IR-NAS network: stem, one compact cell per layer at its Viterbi width,
    ASPP, 3×3 conv; predicts the residual (output = input image + prediction)."""

    size_multiple = 1

    def __init__(self, genotype: HiNASGenotype):
        super().__init__()
        g = validate(genotype)
        _check_image_channels(g.in_channels, g.out_channels)
        self.genotype = g
        self.image_channels = g.in_channels
        self.stem = _stem(g.in_channels + int(g.noise_map), g.stem_channels)
        out_channels = [g.nodes * g.base_width * 2**level for level in g.widths]
        self.body = nn.ModuleList()
        prev2 = prev = g.stem_channels  # the stem stands in for layers -1 and -2
        for level, c_out in zip(g.widths, out_channels):
            self.body.append(_DerivedLayer(prev2, prev, g.base_width * 2**level, g.cell))
            prev2, prev = prev, c_out
        self.aspp = ASPP(prev, prev) if g.aspp else nn.Identity()
        self.head = _head(prev, g.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prev2 = prev = self.stem(x)
        for layer in self.body:
            prev2, prev = prev, layer(prev2, prev)
        return _add_residual(x, self.head(self.aspp(prev)), self.image_channels)


def build_hinas(genotype: HiNASGenotype) -> HiNASNet:
    return HiNASNet(genotype)
