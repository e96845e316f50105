"""The zoo: every entry loads, its sha256 matches, and a tampered file is refused."""

from dataclasses import replace

import pytest
import torch

from restore.errors import RestoreError
from restore.zoo.registry import default_entry, get_entry, list_entries, load_network, sha256_of, verify


def test_there_is_a_default_denoiser():
    assert default_entry("denoise", 1).task == "denoise"
    assert default_entry("denoise", 3)  # a colour image falls back to a gray model if needed


@pytest.mark.parametrize("entry", list_entries(), ids=lambda e: e.name)
def test_every_entry_loads_and_matches_its_sha256(entry):
    assert sha256_of(entry.weights_path) == entry.sha256
    net = load_network(entry)
    x = torch.rand(1, entry.channels + int(entry.noise_map), 32, 32)
    assert net(x).shape == (1, entry.channels, 32, 32)


def test_zoo_covers_the_issue_7_models_within_25_mb():
    """denoise gray + colour (σ-map, 0–75), camera noise, deblock, derain; both search spaces
    represented; the whole zoo (weights, genotypes, cards) at most 25 MB."""
    entries = {e.name: e for e in list_entries()}
    assert default_entry("denoise", 1).name == "denoise-gray"
    assert default_entry("denoise", 3).name == "denoise-color"
    for name in ("denoise-gray", "denoise-color"):
        assert entries[name].noise_map and tuple(entries[name].level_range) == (0.0, 75.0)
    assert entries["denoise-real"].task == "denoise-real" and entries["denoise-real"].channels == 3
    assert default_entry("denoise-real", 3).name == "denoise-real"  # the app's "Real camera noise" task
    assert default_entry("deblock", 1) and default_entry("derain", 3)
    assert {e.space for e in entries.values()} >= {"modnas", "hinas"}
    folder = entries["denoise-gray"].weights_path.parents[1]
    assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) <= 25 * 2**20


def test_tampered_weights_are_refused(tmp_path, monkeypatch):
    entry = list_entries()[0]
    fake = replace(entry, sha256="0" * 64)
    with pytest.raises(RestoreError, match="fail the sha256 check"):
        verify(fake)


def test_unknown_model_and_task():
    with pytest.raises(RestoreError, match="unknown model"):
        get_entry("nope")
    with pytest.raises(RestoreError, match="unknown task"):
        default_entry("sharpen", 1)
