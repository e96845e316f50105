"""`restore.train.average`: the mean of runs' weights, loadable like a run."""

import json
import shutil

import numpy as np
import pytest
import torch

from restore.errors import RestoreError
from restore.models.build import build
from restore.models.genotype import load_genotype
from restore.train.average import average_runs, average_state_dicts
from restore.train.checkpoint import save_tensors


def _run(folder, genotype, seed):
    folder.mkdir()
    shutil.copyfile(genotype, folder / "genotype.json")
    torch.manual_seed(seed)
    state = build(load_genotype(genotype)).state_dict()
    save_tensors(folder / "best.safetensors", state)
    return state


def test_average_of_two_runs_is_their_mean_and_loads(tiny_genotype, tmp_path):
    import restore
    from safetensors.torch import load_file

    a = _run(tmp_path / "a", tiny_genotype, 0)
    b = _run(tmp_path / "b", tiny_genotype, 1)
    average_runs([tmp_path / "a", tmp_path / "b"], tmp_path / "soup")
    soup = load_file(tmp_path / "soup" / "best.safetensors")
    floats = [k for k in a if a[k].is_floating_point()]
    assert floats and any(not torch.equal(a[k], b[k]) for k in floats)
    for k in a:
        expected = (a[k] + b[k]) / 2 if a[k].is_floating_point() else a[k]
        torch.testing.assert_close(soup[k], expected)
    assert "a/best.safetensors" in (tmp_path / "soup" / "SOURCES.txt").read_text()
    out = restore.load(tmp_path / "soup")(np.full((24, 24), 0.5, np.float32))
    assert out.shape == (24, 24) and np.isfinite(out).all()


def test_averaging_refuses_what_cannot_be_averaged(tiny_genotype, tmp_path):
    a = _run(tmp_path / "a", tiny_genotype, 0)
    with pytest.raises(RestoreError, match="different tensors"):
        average_state_dicts([a, {k: v for k, v in list(a.items())[1:]}])
    key = next(k for k in a if a[k].dim() > 0)
    with pytest.raises(RestoreError, match="shape"):
        average_state_dicts([a, {**a, key: torch.zeros(3, 3, 3, 3, 3)}])
    other = tmp_path / "other"
    other.mkdir()
    geno = json.loads(tiny_genotype.read_text())
    geno["name"] = "something else"
    (other / "genotype.json").write_text(json.dumps(geno))
    save_tensors(other / "best.safetensors", a)
    with pytest.raises(RestoreError, match="different genotypes"):
        average_runs([tmp_path / "a", other], tmp_path / "soup")
    with pytest.raises(RestoreError, match="one of the inputs"):
        average_runs([tmp_path / "a", tmp_path / "a"], tmp_path / "a")
    with pytest.raises(RestoreError, match="one --weights for every run"):
        average_runs([tmp_path / "a", tmp_path / "a"], tmp_path / "s", ["x", "y", "z"])
    assert not (tmp_path / "soup").exists()
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    shutil.copyfile(tiny_genotype, damaged / "genotype.json")
    (damaged / "best.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(RestoreError, match="cannot read weights"):
        average_runs([tmp_path / "a", damaged], tmp_path / "soup")
    average_runs([tmp_path / "a"], tmp_path / "soup")
    with pytest.raises(RestoreError, match="exists"):
        average_runs([tmp_path / "a"], tmp_path / "soup")
