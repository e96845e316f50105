"""Genotype JSON: versioned, validated before any allocation, never eval'd or pickled."""

import json
from pathlib import Path

import torch

import pytest

from restore.errors import RestoreError
from restore.models.build import load_preset
from restore.models.genotype import from_dict, from_json, load_genotype, save_genotype, to_dict


def preset_dict():
    return json.loads(json.dumps(to_dict(load_preset("modnas-b"))))  # plain JSON types


def test_roundtrip_file(tmp_path):
    g = load_preset("modnas-ar")
    path = save_genotype(g, tmp_path / "g.json")
    assert load_genotype(path) == g
    assert json.loads(path.read_text())["format"] == "restore-genotype"


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d.update(version=99), "unsupported genotype version"),
        (lambda d: d.pop("format"), "not a restore genotype"),
        (lambda d: d.update(space="evolved"), "unknown search space"),
        (lambda d: d["encoder"][0]["layers"][0].update(op="conv_11x11"), "unknown normal op 'conv_11x11'"),
        (lambda d: d["encoder"][0]["sample"].update(op="bicubic"), "unknown down op"),
        (lambda d: d["encoder"][0]["layers"][0].update(channels=1_000_000), "outside"),
        (lambda d: d.update(head_channels=10**6), "outside"),
        (lambda d: d.update(stages=500), "outside"),
        (lambda d: d.update(in_channels="3"), "must be an integer"),
        (lambda d: d.update(extra_field=1), "unknown field"),
        (lambda d: d["decoder"].pop(), "one more decoder block"),
    ],
)
def test_bad_genotypes_are_refused_with_a_clear_message(mutate, message):
    d = preset_dict()
    mutate(d)
    with pytest.raises(RestoreError, match=message):
        from_dict(d)


def test_hinas_validation():
    d = {"format": "restore-genotype", "version": 1, "space": "hinas", "cell": [{"inputs": [0, 1], "ops": ["conv_3x3", "none"]}],
         "widths": [0, 1]}
    with pytest.raises(RestoreError, match="'none' cannot be a kept input"):
        from_dict(d)
    d["cell"][0]["ops"] = ["conv_3x3", "def_conv_3x3"]
    d["widths"] = [0, 2]
    with pytest.raises(RestoreError, match="one step per layer"):
        from_dict(d)
    d["widths"] = [0, 1]
    assert from_dict(d).nodes == 1


def test_not_json_and_missing_file(tmp_path):
    with pytest.raises(RestoreError, match="not valid JSON"):
        from_json("{nope")
    with pytest.raises(RestoreError, match="not found"):
        load_genotype(tmp_path / "missing.json")
    big = tmp_path / "big.json"
    big.write_text(" " * 2_000_000)
    with pytest.raises(RestoreError, match="larger than 1 MB"):
        load_genotype(big)


def test_scale_width_keeps_topology_and_rounds_to_multiples_of_8():
    from restore.models.build import build, parameter_count, resolve_genotype
    from restore.models.genotype import scale_width

    g = resolve_genotype(Path(__file__).parents[1] / "training/searched-modnas-step300.json", noise_map=True)
    wide = scale_width(g, 1.5)
    assert [[x.op for x in b.layers] for b in wide.encoder] == [[x.op for x in b.layers] for b in g.encoder]
    channels = [x.channels for b in wide.encoder + wide.decoder for x in b.layers] + [wide.head_channels]
    assert all(c % 8 == 0 for c in channels)
    assert wide.head_channels == max(8, round(g.head_channels * 1.5 / 8) * 8)
    assert parameter_count(wide) > parameter_count(g)
    assert scale_width(g, 1) is g
    out = build(wide)(torch.rand(1, 2, 32, 32))
    assert out.shape == (1, 1, 32, 32)
    assert resolve_genotype("modnas-b", width=2.0) == scale_width(resolve_genotype("modnas-b"), 2.0)


def test_a_zoo_model_name_resolves_to_its_architecture():
    """`restore train -m denoise-gray` trains the shipped architecture anew."""
    from restore.models.build import resolve_genotype
    from restore.models.genotype import load_genotype
    from restore.zoo.registry import get_entry

    assert resolve_genotype("denoise-gray") == load_genotype(get_entry("denoise-gray").genotype_path)
    with pytest.raises(RestoreError, match="not a preset .* a zoo model .* or a genotype JSON file"):
        resolve_genotype("denoise-grey")


def test_scale_width_hinas_and_bad_factor():
    from restore.models.build import load_preset
    from restore.models.genotype import HiNASGenotype, Node, scale_width

    g = HiNASGenotype(cell=(Node((0, 1), ("conv_3x3", "skip")),), widths=(0, 1), base_width=4, stem_channels=16)
    w = scale_width(g, 2)
    assert (w.base_width, w.stem_channels, w.cell) == (8, 32, g.cell)
    with pytest.raises(RestoreError):
        scale_width(load_preset("modnas-b"), 0)
