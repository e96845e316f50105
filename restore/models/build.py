"""`build(genotype)`: the derived network for a genotype of either search space.

Also resolves *model sources* by name: a preset name (``modnas-b``), or a genotype JSON path.
"""

from __future__ import annotations

from dataclasses import replace
from importlib import resources
from pathlib import Path

from torch import nn

from restore.errors import RestoreError
from restore.models.genotype import Genotype, HiNASGenotype, ModNASGenotype, from_json, load_genotype, scale_width


# Each field of a genotype is bounded on load (restore.models.genotype), but together they
# can still ask for a huge network (64 layers × 1024 channels × 16 stages ≈ 30 G weights).
# The shipped and paper networks have < 1 M parameters.
MAX_PARAMETERS = 50_000_000


def parameter_count(genotype: Genotype) -> int:
    """Exact parameter count, allocating nothing: the network is built on the meta device."""
    import torch

    with torch.device("meta"):
        return sum(p.numel() for p in _build(genotype).parameters())


def build(genotype: Genotype) -> nn.Module:
    """A plain nn.Module with only the selected ops (no α/β/γ); refused, before any weight
    is allocated, when it would have more than `MAX_PARAMETERS` parameters."""
    count = parameter_count(genotype)
    if count > MAX_PARAMETERS:
        raise RestoreError(f"genotype {genotype.name or '(unnamed)'!r} asks for {count / 1e6:,.0f} M parameters, above "
                           f"the limit of {MAX_PARAMETERS / 1e6:.0f} M; refusing to build it")
    return _build(genotype)


def _build(genotype: Genotype) -> nn.Module:
    if isinstance(genotype, ModNASGenotype):
        from restore.models.modnas import build_modnas

        return build_modnas(genotype)
    if isinstance(genotype, HiNASGenotype):
        from restore.models.hinas import build_hinas

        return build_hinas(genotype)
    raise RestoreError(f"not a genotype: {type(genotype).__name__}")


def list_presets() -> list[str]:
    folder = resources.files("restore.models") / "presets"
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def load_preset(name: str) -> Genotype:
    folder = resources.files("restore.models") / "presets"
    path = folder / f"{name}.json"
    if not path.is_file():
        raise RestoreError(f"unknown preset {name!r} (known: {', '.join(list_presets())})")
    return from_json(path.read_text(encoding="utf-8"))


def _named_genotype(name: str) -> Genotype:
    """A preset, or the architecture of a shipped zoo model (to train it anew)."""
    from restore.zoo.registry import get_entry, list_models  # the zoo builds on this module

    if name in list_presets():
        return load_preset(name)
    if name in list_models():
        return load_genotype(get_entry(name).genotype_path)
    raise RestoreError(f"unknown architecture {name!r}: not a preset ({', '.join(list_presets())}), "
                       f"a zoo model ({', '.join(list_models())}) or a genotype JSON file")


def resolve_genotype(source: str | Path, *, in_channels: int | None = None, noise_map: bool | None = None,
                     stages: int | None = None, width: float = 1.0) -> Genotype:
    """A preset name or a genotype file, optionally re-targeted (channels, σ map, stages, width factor)."""
    text = str(source)
    g = load_genotype(text) if text.endswith(".json") or Path(text).is_file() else _named_genotype(text)
    changes: dict = {}
    if in_channels is not None:
        changes.update(in_channels=in_channels, out_channels=in_channels)
    if noise_map is not None:
        changes["noise_map"] = noise_map
    if stages is not None:
        if not isinstance(g, ModNASGenotype):
            raise RestoreError("--stages applies to MoD-NAS genotypes only")
        changes["stages"] = stages
    g = replace(g, **changes) if changes else g
    return scale_width(g, width)
