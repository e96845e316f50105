"""MoD-NAS space: supernet, derivation rules (Eq. 9–11), derived networks, presets."""

import numpy as np
import pytest
import torch

from restore.models.build import build, list_presets, load_preset, resolve_genotype
from restore.models.genotype import Block, Layer, ModNASGenotype, from_json, to_json
from restore.models.modnas import ModNASNet, ModNASSupernet, SearchSpaceConfig, derive_depth, derive_width, live_layers
from restore.runtime.profile import count_parameters


def small_cfg(**kw):
    base = dict(channels=8, levels=2, layers_per_block=2, stages=2)
    base.update(kw)
    return SearchSpaceConfig(**base)


@pytest.mark.parametrize("channels,noise_map", [(1, False), (3, False), (1, True)])
def test_supernet_forward_backward_and_arch_grads(channels, noise_map):
    torch.manual_seed(0)
    net = ModNASSupernet(small_cfg(in_channels=channels, out_channels=channels, noise_map=noise_map))
    x = torch.rand(2, channels + int(noise_map), 64, 64)
    y = net(x)
    assert y.shape == (2, channels, 64, 64)
    y.square().mean().backward()
    for name, p in net.named_arch_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    weights = {id(p) for p in net.weights()}
    arch = {id(p) for p in net.arch_parameters()}
    assert not weights & arch
    assert weights | arch == {id(p) for p in net.parameters()}


def test_paper_search_setting_builds():
    net = ModNASSupernet(SearchSpaceConfig(channels=48, stages=2))  # C = 48, T = 2
    assert len(net.stages) == 2 and net.deltas().shape == (2,)
    assert len(net.alpha) == 3 * 4 + 4 * 3 + 3  # 3 enc blocks (3 NL + down), 4 dec blocks (3 NL), 3 ups
    assert all(len(v) == 7 for k, v in net.alpha.items() if "_l" in k)
    assert all(len(v) == 4 for k, v in net.alpha.items() if k.endswith("down"))
    assert all(len(v) == 5 for k, v in net.alpha.items() if k.endswith("up"))


def test_unfolding_follows_eq6():
    """x(t) = δ(t)·y + (1 − δ(t))·v(t): with δ → 1 the output is the input."""
    net = ModNASSupernet(small_cfg(stages=2))
    with torch.no_grad():
        net.delta_logit.fill_(30.0)
    x = torch.rand(1, 1, 32, 32)
    assert torch.allclose(net(x), x, atol=1e-6)


def test_width_rule_keeps_90_percent_in_multiples_of_8():
    beta = np.zeros(48)
    beta[:10] = 1.0  # 10 channels hold all the mass
    assert derive_width(beta) == 16  # 9 needed → rounded up to 16
    beta = np.r_[np.full(16, 1.0), np.full(32, 0.01)]
    assert derive_width(beta) == 16  # 16 / 16.32 = 98 % ≥ 90 %
    assert derive_width(np.ones(48)) == 48
    assert derive_width(-np.r_[np.ones(8), np.zeros(40)]) == 8  # |β|, sign does not matter


def test_depth_rule_takes_most_probable_path():
    gammas = [torch.tensor([0.1, 2.0]), torch.tensor([3.0, 0.0, 0.5]), torch.tensor([0.0, 0.0, 0.0, 5.0])]
    assert derive_depth(gammas) == [1, 0, 3]
    # layer 3 keeps its op on L2 = L0: layer 1 is dead, layer 3 live
    assert live_layers([1, 0, 3]) == {3}


def test_genotype_json_roundtrip_and_derived_net_runs_on_odd_sizes():
    torch.manual_seed(1)
    net = ModNASSupernet(small_cfg(in_channels=3, out_channels=3))
    g = net.genotype(name="t")
    g2 = from_json(to_json(g))
    assert g2 == g
    derived = build(g2)
    assert isinstance(derived, ModNASNet)
    assert not any("alpha" in n or "beta" in n or "gamma" in n for n, _ in derived.named_parameters())
    x = torch.rand(1, 3, 37, 53, requires_grad=True)
    y = derived(x)
    assert y.shape == (1, 3, 37, 53)
    y.sum().backward()


def test_derived_widths_follow_beta():
    torch.manual_seed(0)
    net = ModNASSupernet(small_cfg(channels=32, stages=1))
    with torch.no_grad():
        for b in net.beta.values():
            b.zero_()
            b[:, :5] = 1.0  # 5 of 32 channels matter → 8 kept
        for a in net.alpha.values():
            a.zero_()
            a[0] = 1.0  # first candidate everywhere
        for g in net.gamma.values():
            g.zero_()
            g[-1] = 1.0  # keep every layer
    geno = net.genotype()
    layers = [l for b in geno.encoder + geno.decoder for l in b.layers]
    assert all(l.op == "conv_3x3" and l.channels == 8 for l in layers)
    assert all(b.sample.channels == 8 for b in geno.encoder)
    build(geno)(torch.rand(1, 1, 32, 32))


def test_skip_candidate_ablation_and_plain_nas():
    plain = ModNASSupernet(small_cfg(unfold=False))
    assert plain.cfg.stages == 1 and plain.deltas() is None
    skip = ModNASSupernet(small_cfg(depth="skip"))
    assert "skip" in skip.cfg.normal_ops and len(skip.gamma) == 0
    skip(torch.rand(1, 1, 32, 32)).mean().backward()
    build(skip.genotype())(torch.rand(1, 1, 32, 32))


@pytest.mark.parametrize("name", ["modnas-b", "modnas-ar"])
def test_paper_presets_build(name):
    assert name in list_presets()
    g = load_preset(name)
    net = build(g)
    assert net(torch.rand(1, 1, 40, 48)).shape == (1, 1, 40, 48)
    params = count_parameters(net)
    if name == "modnas-b":  # the paper reports 418 k for T = 1; see docs/RESULTS.md for why ours differs
        assert 400_000 < params < 460_000


def test_retargeting_a_preset():
    g = resolve_genotype("modnas-b", in_channels=3, noise_map=True, stages=2)
    net = build(g)
    assert len(net.unets) == 2
    assert net(torch.rand(1, 4, 32, 32)).shape == (1, 3, 32, 32)


def test_skipped_layer_source_must_exist():
    from restore.errors import RestoreError

    bad = ModNASGenotype(
        encoder=(Block((Layer("skip", 8, 5),), Layer("area", 8)),),
        decoder=(Block((Layer("conv_3x3", 8),), Layer("nearest", 8)), Block((Layer("conv_3x3", 8),), None, 8)),
        head_channels=8,
    )
    with pytest.raises(RestoreError, match="source"):
        from restore.models.genotype import validate

        validate(bad)
