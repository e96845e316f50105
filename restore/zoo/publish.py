"""Publish a trained run into the shipped zoo: copy weights + genotype, write the card,
record the sha256 in the manifest. Used by the zoo benchmarks after training:

    python -m restore.zoo.publish training/denoise-gray denoise-gray --task denoise \
        --channels 1 --noise-map --range 0-75 --default --description "..."

Test-set numbers measured later go into a shipped entry without touching its weights:
`update_card("denoise-gray", metrics={...})`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import List, Optional

import typer

from restore.errors import RestoreError
from restore.zoo.registry import ModelEntry, _manifest_path, _zoo_dir, get_entry, list_entries, sha256_of


def publish(run_dir: Path, entry: ModelEntry, *, weights_name: str = "best.safetensors") -> ModelEntry:
    run_dir = Path(run_dir)
    src = run_dir / weights_name
    if not src.is_file():
        raise RestoreError(f"{src} not found")
    folder = _zoo_dir() / entry.name
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, folder / "model.safetensors")
    shutil.copyfile(run_dir / "genotype.json", folder / "genotype.json")
    entry = ModelEntry(**{**asdict(entry), "folder": entry.name, "sha256": sha256_of(folder / "model.safetensors")})
    _write_entry(entry)
    return entry


def update_card(name: str, *, metrics: dict, description: str | None = None) -> ModelEntry:
    """Replace the metrics (and optionally the description) of a shipped entry; its weights,
    genotype and sha256 stay as they are."""
    entry = get_entry(name)
    changes = {"metrics": dict(metrics)} | ({"description": description} if description is not None else {})
    entry = ModelEntry(**{**asdict(entry), **changes})
    _write_entry(entry)
    return entry


def _write_entry(entry: ModelEntry) -> None:
    """Write the entry's card and put it in the manifest (one default per task and channels)."""
    (_zoo_dir() / entry.folder / "card.md").write_text(model_card(entry), encoding="utf-8")
    entries = [e for e in list_entries() if e.name != entry.name]
    if entry.default:  # one default per task and channel count
        entries = [ModelEntry(**{**asdict(e), "default": False}) if (e.task, e.channels) == (entry.task, entry.channels) else e for e in entries]
    entries.append(entry)
    entries.sort(key=lambda e: (e.task, e.channels, e.name))
    _manifest_path().write_text(json.dumps({"version": 1, "models": [asdict(e) for e in entries]}, indent=2) + "\n", encoding="utf-8")


def model_card(e: ModelEntry) -> str:
    rng = f"{e.level_range[0]:g}–{e.level_range[1]:g}" if e.level_range else "fixed"
    metrics = "\n".join(f"| {k} | {v} |" for k, v in e.metrics.items()) or "| – | – |"
    return f"""# {e.name}

{e.description}

- task: {e.task}; {'gray' if e.channels == 1 else 'colour'} images; level range: {rng}; noise-level map input: {e.noise_map}
- architecture: {e.space} genotype in `genotype.json`
- tiles: {e.tile}×{e.tile} unless `--tile` says otherwise
- weights: `model.safetensors`, sha256 `{e.sha256}`
- training: {e.trained}

| measurement | value |
|---|---|
{metrics}
"""


def main(
    run_dir: Path = typer.Argument(...),
    name: str = typer.Argument(...),
    task: str = typer.Option(...),
    channels: int = typer.Option(1),
    noise_map: bool = typer.Option(False, "--noise-map"),
    level_range: Optional[str] = typer.Option(None, "--range", help="LO-HI, e.g. 0-75"),
    default: bool = typer.Option(False, "--default"),
    description: str = typer.Option(""),
    trained: str = typer.Option(""),
    metric: Optional[List[str]] = typer.Option(None, "--metric", help="KEY=VALUE"),
    weights: str = typer.Option("best.safetensors"),
):
    metrics = dict(m.rsplit("=", 1) for m in (metric or []))  # the last "=" separates: keys may hold "σ=25"
    entry = ModelEntry(name=name, task=task, channels=channels, noise_map=noise_map,
                       level_range=tuple(float(v) for v in level_range.split("-")) if level_range else None, space=json.loads((run_dir / "genotype.json").read_text())["space"],
                       metrics=metrics, description=description, trained=trained, default=default)
    e = publish(run_dir, entry, weights_name=weights)
    typer.echo(f"published {e.name} ({e.sha256[:12]}…) into {_zoo_dir() / e.folder}")


if __name__ == "__main__":
    typer.run(main)
