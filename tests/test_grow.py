"""Deepening a trained MoD-NAS network: same function at the start, then it trains."""

import json

import pytest
import torch
from safetensors.torch import save_file

from restore.errors import RestoreError
from restore.models.build import build, resolve_genotype
from restore.models.genotype import from_dict, load_genotype
from restore.models.grow import NEW_STAGE_DELTA_LOGIT, add_stages, block_levels, deepen, load_grown, main
from restore.train.config import TrainConfig
from restore.train.trainer import Trainer

# two levels; removed layers (skip) at full resolution, half and quarter resolution
SHALLOW = {
    "format": "restore-genotype", "version": 1, "space": "modnas", "name": "shallow",
    "head_channels": 8, "stages": 1, "in_channels": 1, "out_channels": 1, "noise_map": False,
    "encoder": [
        {"layers": [{"op": "conv_3x3", "channels": 8}, {"op": "skip", "channels": 8, "source": 1}],
         "sample": {"op": "conv_3x3_s2", "channels": 8}},
        {"layers": [{"op": "skip", "channels": 8, "source": 0}, {"op": "skip", "channels": 8, "source": 0}],
         "sample": {"op": "area", "channels": 8}},
    ],
    "decoder": [
        {"layers": [{"op": "sep_conv_3x3", "channels": 8}, {"op": "skip", "channels": 8, "source": 1}],
         "sample": {"op": "bilinear", "channels": 8}},
        {"layers": [{"op": "skip", "channels": 8, "source": 0}, {"op": "dil_conv_3x3", "channels": 8}],
         "sample": {"op": "nearest", "channels": 8}, "fuse_channels": 8},
        {"layers": [{"op": "conv_3x3", "channels": 8}, {"op": "skip", "channels": 8, "source": 1}],
         "sample": None, "fuse_channels": 8},
    ],
}


def _ops(block):
    return [layer.op for layer in block.layers]


def test_deepen_fills_removed_layers_below_full_resolution_only():
    g = from_dict(SHALLOW)
    deep = deepen(g, min_level=1)
    assert block_levels(g) == ([0, 1], [2, 1, 0])
    assert _ops(deep.encoder[0]) == ["conv_3x3", "skip"]  # full resolution: untouched
    assert _ops(deep.decoder[2]) == ["conv_3x3", "skip"]
    assert _ops(deep.encoder[1]) == ["res_block_3x3"] * 2
    assert _ops(deep.decoder[0]) == ["sep_conv_3x3", "res_block_3x3"]
    assert _ops(deep.decoder[1]) == ["res_block_3x3", "dil_conv_3x3"]
    assert all(layer.channels == 8 for b in deep.encoder + deep.decoder for layer in b.layers)
    assert _ops(deepen(g, min_level=0).encoder[0]) == ["conv_3x3", "res_block_3x3"]
    assert deepen(g, min_level=2).encoder[1] == g.encoder[1]
    with pytest.raises(RestoreError, match="min_level"):
        deepen(g, min_level=3)


def test_deepen_full_resolution_only():
    g = from_dict(SHALLOW)
    deep = deepen(g, min_level=0, max_level=0)
    assert _ops(deep.encoder[0]) == ["conv_3x3", "res_block_3x3"]
    assert _ops(deep.decoder[2]) == ["conv_3x3", "res_block_3x3"]
    assert deep.encoder[1] == g.encoder[1] and deep.decoder[:2] == g.decoder[:2]
    assert deep.name.endswith("deep0-0")
    with pytest.raises(RestoreError, match="max_level"):
        deepen(g, min_level=1, max_level=0)


@pytest.mark.parametrize("min_level", [0, 1])
def test_grown_network_computes_what_the_shallow_one_did(min_level):
    torch.manual_seed(0)
    g = from_dict(SHALLOW)
    shallow = build(g).eval()
    for p in shallow.parameters():  # move the zero-initialised tail so the check is not 0 == 0
        torch.nn.init.normal_(p, std=0.1)
    deep = build(deepen(g, min_level=min_level)).eval()
    added = load_grown(deep, shallow.state_dict())
    assert len(added) == (6 if min_level == 0 else 4)
    x = torch.rand(2, 1, 20, 28)
    with torch.no_grad():
        assert torch.allclose(deep(x), shallow(x), atol=1e-6)
    # the added blocks are trainable: their zeroed convs get a gradient
    deep.train()
    deep(x).square().mean().backward()
    last = deep.get_submodule(added[0]).body[-1][-1]
    assert last.weight.grad is not None and last.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("deeper", [False, True])
def test_added_stage_first_passes_the_trained_stage_through(deeper):
    torch.manual_seed(0)
    g = from_dict(SHALLOW)
    one = build(g).eval()
    for p in one.parameters():
        torch.nn.init.normal_(p, std=0.1)
    grown_g = add_stages(deepen(g) if deeper else g, 2)
    two = build(grown_g).eval()
    added = load_grown(two, one.state_dict())
    assert added[-1] == "unets.1" and len(added) == (1 + 2 * 4 if deeper else 1)
    assert torch.equal(two.unets[1].head[0].weight, one.unets[0].head[0].weight)  # a copy ...
    assert two.unets[1].head[0].weight.data_ptr() != two.unets[0].head[0].weight.data_ptr()  # ... not shared
    assert two.delta_logit[1].item() == NEW_STAGE_DELTA_LOGIT
    x = torch.rand(2, 1, 20, 28)
    with torch.no_grad():
        # δ(2) = sigmoid(−9) mixes back ≈ 1e-4 of the input, so not bit-exact
        assert torch.allclose(two(x), one(x), atol=2e-4)
        assert not torch.allclose(one(x), x, atol=1e-2)  # the check is not trivially met
    two.train()
    two(x).square().mean().backward()
    assert two.unets[1].tail[-1].weight.grad.abs().sum() > 0
    with pytest.raises(RestoreError, match="only 1"):
        load_grown(one, two.state_dict())
    with pytest.raises(RestoreError, match="more than the genotype's 2"):
        add_stages(grown_g, 2)


def test_load_grown_rejects_weights_of_another_network():
    g = from_dict(SHALLOW)
    deep = build(deepen(g))
    other = build(from_dict({**SHALLOW, "head_channels": 16}))
    with pytest.raises(RestoreError):
        load_grown(deep, other.state_dict())
    state = build(g).state_dict()
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(RestoreError, match="not a deepening"):
        load_grown(build(deepen(g)), state)
    partial = {k: v for k, v in build(g).state_dict().items() if not k.startswith("unets.0.head")}
    with pytest.raises(RestoreError, match="head"):
        load_grown(build(deepen(g)), partial)


def test_grow_command_writes_a_loadable_genotype(tmp_path, capsys):
    src = tmp_path / "shallow.json"
    src.write_text(json.dumps(SHALLOW))
    main([str(src), str(tmp_path / "deep.json")])
    deep = load_genotype(tmp_path / "deep.json")
    assert deep.name == "shallow-deep1" and _ops(deep.encoder[1]) == ["res_block_3x3"] * 2
    with pytest.raises(SystemExit) as e:
        main([str(src), str(tmp_path / "x.json"), "--min-level", "9"])
    assert e.value.code == 2 and "min_level" in capsys.readouterr().err
    main([str(src), str(tmp_path / "t2.json"), "--stages", "2"])  # stages alone deepen nothing
    t2 = load_genotype(tmp_path / "t2.json")
    assert t2.stages == 2 and t2.name == "shallow-t2" and t2.encoder == from_dict(SHALLOW).encoder
    main([str(src), str(tmp_path / "t2d.json"), "--stages", "2", "--min-level", "1"])
    assert _ops(load_genotype(tmp_path / "t2d.json").encoder[1]) == ["res_block_3x3"] * 2


def test_training_warm_starts_a_deepened_network(tmp_path, tiny_train_dir):
    src = tmp_path / "shallow.json"
    src.write_text(json.dumps(SHALLOW))
    main([str(src), str(tmp_path / "deep.json")])
    torch.manual_seed(0)
    shallow = build(resolve_genotype(src))
    save_file(shallow.state_dict(), str(tmp_path / "shallow.safetensors"))
    cfg = TrainConfig(model=str(tmp_path / "deep.json"), train_dirs=(str(tiny_train_dir),), patch=32, batch=2,
                      steps=1, val_holdout=2, val_images=1, threads=1,
                      init_from=str(tmp_path / "shallow.safetensors"), grow=True)
    trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(trainer.model(x), shallow(x), atol=1e-6)
    strict = TrainConfig(**{**cfg.__dict__, "grow": False})
    with pytest.raises(RestoreError, match="do not match"):
        Trainer(strict, tmp_path / "run2", show_progress=False)
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    broken = TrainConfig(**{**cfg.__dict__, "init_from": str(tmp_path / "broken.safetensors")})
    with pytest.raises(RestoreError, match="cannot read weights"):
        Trainer(broken, tmp_path / "run3", show_progress=False)
    with pytest.raises(RestoreError, match="grow needs init_from"):
        TrainConfig(model=str(src), grow=True)
