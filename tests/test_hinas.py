"""HiNAS / IR-NAS supernet, decoding (top-2 cell inputs, Viterbi widths) and derived net."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from restore.errors import RestoreError
from restore.models.genotype import HiNASGenotype, Node, from_json, to_json
from restore.models.hinas import (
    ASPP,
    PAPER_SETTINGS,
    HiNASNet,
    HiNASSupernet,
    MixedOp,
    build_hinas,
    derive_cell,
    viterbi_widths,
)
from restore.models.ops import HINAS_OPS, Zero

SMALL = dict(layers=2, nodes=2, base_width=4, stem_channels=8)


def small_supernet(channels: int = 1, noise_map: bool = False, **kw) -> HiNASSupernet:
    torch.manual_seed(0)
    return HiNASSupernet(channels, channels, noise_map=noise_map, **{**SMALL, **kw})


def net_input(channels: int, noise_map: bool, h: int, w: int, batch: int = 1) -> torch.Tensor:
    x = torch.rand(batch, channels, h, w)
    if noise_map:
        x = torch.cat([x, torch.full((batch, 1, h, w), 25 / 255)], dim=1)
    return x


def zero_head(net: torch.nn.Module) -> None:
    conv = net.head[-1]
    torch.nn.init.zeros_(conv.weight)
    torch.nn.init.zeros_(conv.bias)


# --------------------------------------------------------------------------- supernet


@pytest.mark.parametrize("channels,noise_map", [(1, False), (3, True)])  # gray and colour+σ map cover every path
def test_supernet_forward_backward(channels, noise_map):
    net = small_supernet(channels, noise_map)
    y = net(net_input(channels, noise_map, 64, 64, batch=2))
    assert y.shape == (2, channels, 64, 64)
    y.square().mean().backward()
    assert net.alpha.grad is not None and net.alpha.grad.abs().sum(dim=1).min() > 0  # every edge
    mask = net.beta_mask.expand_as(net.beta)
    assert net.beta.grad[mask].abs().min() > 0
    assert torch.all(net.beta.grad[~mask] == 0)  # unconnected level pairs stay out


@pytest.mark.parametrize("noise_map", [False, True])
def test_supernet_predicts_residual_on_image_channels(noise_map):
    net = small_supernet(3, noise_map).eval()
    zero_head(net)
    x = net_input(3, noise_map, 16, 16)
    torch.testing.assert_close(net(x), x[:, :3])


def test_parameter_groups_are_disjoint_and_complete():
    net = small_supernet()
    weights = {id(p) for p in net.weights()}
    arch = {id(p) for p in net.arch_parameters()}
    assert not weights & arch
    assert weights | arch == {id(p) for p in net.parameters()}
    assert [n for n, _ in net.named_arch_parameters()] == ["alpha", "beta"]
    assert net.alphas().shape == (2 + 3, len(HINAS_OPS))
    torch.testing.assert_close(net.alphas().sum(dim=1), torch.ones(5))


def test_betas_are_transition_matrices():
    net = small_supernet(layers=3)
    betas = net.betas()
    assert len(betas) == 3
    torch.testing.assert_close(betas[0], torch.ones(1, 3))  # the stem is every layer-0 cell's only source
    for t in betas[1:]:
        assert t.shape == (3, 3)
        assert t[0, 2] == 0 and t[2, 0] == 0
        torch.testing.assert_close(t.sum(dim=0), torch.ones(3))  # softmax over incoming levels


def test_unshared_cells_have_more_parameters_and_same_shapes():
    shared, unshared = small_supernet(), small_supernet(shared_cells=False)
    n_shared = sum(p.numel() for p in shared.weights())
    n_unshared = sum(p.numel() for p in unshared.weights())
    assert n_unshared > n_shared
    x = net_input(1, False, 16, 16)
    assert unshared(x).shape == shared(x).shape == x.shape


def test_mixed_op_is_the_softmax_weighted_sum():
    torch.manual_seed(0)
    op = MixedOp(4, ("conv_3x3", "skip", "none")).eval()
    x = torch.randn(1, 4, 8, 8)
    w = torch.tensor([0.2, 0.5, 0.3])
    torch.testing.assert_close(op(x, w), 0.2 * op.ops[0](x) + 0.5 * x)


@pytest.mark.parametrize("kwargs", [dict(layers=0), dict(primitives=("none",)), dict(primitives=("conv_9x9",))])
def test_supernet_rejects_bad_settings(kwargs):
    with pytest.raises(RestoreError):
        small_supernet(**kwargs)


def test_residual_needs_matching_channels():
    with pytest.raises(RestoreError):
        HiNASSupernet(1, 3, **SMALL)


# --------------------------------------------------------------------------- decoding


def test_top2_inputs_ignore_none():
    ops = list(HINAS_OPS)
    logits = torch.zeros(5, len(ops))
    logits[0, ops.index("sep_conv_3x3")] = 3.0  # node 0 ← h_{l-2}
    logits[1, ops.index("none")] = 5.0  # node 0 ← h_{l-1}: 'none' wins but cannot be kept
    logits[1, ops.index("skip")] = 1.0
    logits[2, ops.index("none")] = 10.0  # node 1 ← h_{l-2}: only 'none' is strong → dropped
    logits[3, ops.index("conv_3x3")] = 2.0  # node 1 ← h_{l-1}
    logits[4, ops.index("dil_conv_3x3")] = 1.5  # node 1 ← node 0
    net = small_supernet()
    with torch.no_grad():
        net.alpha.copy_(logits)
    assert net.genotype().cell == (
        Node(inputs=(0, 1), ops=("sep_conv_3x3", "skip")),
        Node(inputs=(1, 2), ops=("conv_3x3", "dil_conv_3x3")),
    )


def test_derive_cell_checks_alpha_shape():
    with pytest.raises(RestoreError):
        derive_cell(np.zeros((4, len(HINAS_OPS))), HINAS_OPS, nodes=2)


def _brute_force_path(transitions):
    best, best_p = None, -1.0
    for path in itertools.product(range(3), repeat=len(transitions)):
        if any(abs(a - b) > 1 for a, b in zip(path, path[1:])):
            continue
        p = transitions[0].reshape(3)[path[0]]
        for t, a, b in zip(transitions[1:], path, path[1:]):
            p *= t[a, b]
        if p > best_p:
            best, best_p = list(path), p
    return best


def test_viterbi_beats_greedy_on_hand_made_betas():
    start = np.array([0.5, 0.4, 0.1])
    t1 = np.array([[0.2, 0.2, 0.0],
                   [0.1, 0.1, 0.9],
                   [0.0, 0.5, 0.5]])
    t2 = np.array([[0.5, 0.5, 0.0],
                   [0.3, 0.3, 0.4],
                   [0.0, 0.2, 0.8]])
    # greedy: level 0 first (0.5), then 0 → 0, then 0 → 0: p = 0.05; Viterbi: 1 → 2 → 2: p = 0.288
    assert viterbi_widths([start, t1, t2]) == [1, 2, 2]


def test_viterbi_ignores_unconnected_transitions():
    start = np.array([1.0, 0.0, 0.0])
    t1 = np.array([[0.1, 0.2, 100.0],  # 0 → 2 skips a level: must be ignored
                   [0.3, 0.3, 0.4],
                   [0.0, 0.5, 0.5]])
    assert viterbi_widths([start, t1]) == [0, 1]


def test_viterbi_matches_brute_force_and_breaks_ties_to_smaller_width():
    rng = np.random.default_rng(0)
    for _ in range(20):
        transitions = [rng.random(3)] + [rng.random((3, 3)) for _ in range(4)]
        path = viterbi_widths(transitions)
        assert path == _brute_force_path(transitions)
        assert all(abs(a - b) <= 1 for a, b in zip(path, path[1:]))
    assert viterbi_widths([np.ones(3)] + [np.ones((3, 3))] * 3) == [0, 0, 0, 0]


def test_viterbi_accepts_a_square_first_matrix():
    first = np.array([[0.1, 0.7, 0.0],
                      [0.0, 0.0, 0.0],
                      [0.0, 0.0, 0.0]])
    assert viterbi_widths([first]) == [1]


@pytest.mark.parametrize("bad", [[], [np.ones(4)], [np.ones(3), np.ones((2, 3))], [np.zeros(3)], [-np.ones(3)]])
def test_viterbi_rejects_bad_input(bad):
    with pytest.raises(RestoreError):
        viterbi_widths(bad)


# --------------------------------------------------------------------------- derived network


def test_genotype_round_trip_and_derived_net_on_odd_sizes():
    net = small_supernet(3, noise_map=True, layers=3)
    g = net.genotype(name="tiny")
    assert len(g.widths) == 3 and g.nodes == 2 and g.noise_map and g.in_channels == 3
    g2 = from_json(to_json(g))
    assert g2 == g
    derived = build_hinas(g2)
    assert isinstance(derived, HiNASNet) and derived.genotype == g and derived.size_multiple == 1
    x = net_input(3, True, 37, 53).requires_grad_()
    y = derived(x)
    assert y.shape == (1, 3, 37, 53)
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in derived.parameters())  # no dead branches


def test_derived_net_holds_only_the_selected_ops():
    cell = (Node(inputs=(1, 1), ops=("def_conv_3x3", "skip")),
            Node(inputs=(1, 2), ops=("conv_3x3", "dil_conv_3x3")))
    g = HiNASGenotype(cell=cell, widths=(0, 1, 1), base_width=4, stem_channels=8)
    net = build_hinas(g)
    names = [n for n, _ in net.named_parameters()]
    assert not any("alpha" in n or "beta" in n for n in names)
    modules = list(net.modules())
    assert not any(isinstance(m, (MixedOp, Zero)) for m in modules)
    n_deform = sum(type(m).__name__ == "DeformConv2d" for m in modules)
    assert n_deform == 3  # one per layer
    # h_{l-2} (input 0) is never read, so no layer projects it
    assert all(layer.proj0 is None for layer in net.body)
    assert net(torch.rand(1, 1, 9, 11)).shape == (1, 1, 9, 11)


def test_derived_net_predicts_residual():
    g = HiNASGenotype(cell=(Node(inputs=(0, 1), ops=("conv_3x3", "skip")),), widths=(2,),
                      base_width=2, stem_channels=4, in_channels=3, out_channels=3, noise_map=True)
    net = build_hinas(g).eval()
    zero_head(net)
    x = net_input(3, True, 12, 12)
    torch.testing.assert_close(net(x), x[:, :3])


@pytest.mark.parametrize("task,layers,nodes", [("denoise", 4, 5), ("derain", 3, 4)])
def test_paper_settings_build_and_run(task, layers, nodes):
    assert PAPER_SETTINGS[task] == dict(layers=layers, nodes=nodes, base_width=10)
    torch.manual_seed(0)
    net = HiNASSupernet(**PAPER_SETTINGS[task]).eval()
    assert len(net.body) == layers and net.alphas().shape[0] == sum(i + 2 for i in range(nodes))
    x = torch.rand(1, 1, 8, 8)
    with torch.no_grad():
        assert net(x).shape == x.shape
        g = net.genotype()
        assert len(g.widths) == layers and g.nodes == nodes
        assert build_hinas(g).eval()(x).shape == x.shape


def test_aspp_is_local():
    # no global pooling branch: far-away pixels must not change an output pixel (tiling)
    torch.manual_seed(0)
    aspp = ASPP(4, 6).eval()
    x = torch.randn(1, 4, 41, 43)
    y = aspp(x)
    assert y.shape == (1, 6, 41, 43)
    x2 = x.clone()
    x2[..., :5, :5] += 10.0
    torch.testing.assert_close(aspp(x2)[..., 20:, 20:], y[..., 20:, 20:])
