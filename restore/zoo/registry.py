"""Registry of pretrained models (timm style): one dataclass per entry, `list_models`,
`get_entry`, `load_network`.

The manifest (`manifest.json` beside this file) lists every shipped model; each lives in
its own folder with `model.safetensors` and `genotype.json`. The weights' sha256 is checked
before they are read, so a corrupted or swapped file is refused, and safetensors means
no file is ever deserialised into code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from restore.errors import RestoreError

TASKS = ("denoise", "denoise-real", "derain", "deblock")
_TASK_OF_DEGRADATION = {"awgn": "denoise", "camera": "denoise-real", "rain": "derain", "jpeg": "deblock"}


def task_for_degradation(spec: str) -> str:
    """The task whose models undo a degradation spec: `jpeg:20` → deblock, `camera` → denoise-real."""
    return _TASK_OF_DEGRADATION.get(spec.split(":", 1)[0].strip().lower(), "denoise")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    task: str  # one of TASKS
    channels: int  # image channels: 1 gray, 3 colour
    noise_map: bool = False  # takes a σ map (noise-level conditioned)
    level_range: tuple[float, float] | None = None  # σ (0–255) or JPEG quality range covered
    space: str = "modnas"  # search space of the genotype
    folder: str = ""  # folder inside restore/zoo
    sha256: str = ""  # of model.safetensors
    metrics: dict = field(default_factory=dict)  # e.g. {"BSD68 sigma=25 PSNR": 29.1}
    description: str = ""
    trained: str = ""  # how it was trained (command, steps)
    default: bool = False  # the default model of its task and channel count
    tile: int = 64  # tile side when the user names none (the papers' 64; `derain`: its 128² training patches)

    @property
    def weights_path(self) -> Path:
        return _zoo_dir() / self.folder / "model.safetensors"

    @property
    def genotype_path(self) -> Path:
        return _zoo_dir() / self.folder / "genotype.json"


def _zoo_dir() -> Path:
    return Path(str(resources.files("restore.zoo")))


def _manifest_path() -> Path:
    return _zoo_dir() / "manifest.json"


def _entry(data: dict) -> ModelEntry:
    known = {f.name for f in fields(ModelEntry)}
    data = {k: v for k, v in data.items() if k in known}
    if data.get("level_range") is not None:
        data["level_range"] = tuple(data["level_range"])
    return ModelEntry(**data)


def list_entries() -> list[ModelEntry]:
    path = _manifest_path()
    if not path.exists():
        return []
    return [_entry(d) for d in json.loads(path.read_text(encoding="utf-8"))["models"]]


def list_models(task: str | None = None) -> list[str]:
    return [e.name for e in list_entries() if task is None or e.task == task]


def get_entry(name: str) -> ModelEntry:
    for entry in list_entries():
        if entry.name == name:
            return entry
    known = ", ".join(list_models()) or "none"
    raise RestoreError(f"unknown model {name!r} (known: {known}; see `restore models`)")


def default_entry(task: str, channels: int) -> ModelEntry:
    """The default model for a task and image type; a gray model serves colour images
    channel by channel when no colour model exists."""
    if task not in TASKS:
        raise RestoreError(f"unknown task {task!r} (known: {', '.join(TASKS)})")
    candidates = [e for e in list_entries() if e.task == task]
    for want in (channels, 1 if channels == 3 else 3):
        for pick_default in (True, False):
            for e in candidates:
                if e.channels == want and e.default == pick_default:
                    return e
    raise RestoreError(f"no shipped model for task {task!r} yet (see `restore models`)")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(entry: ModelEntry) -> None:
    if not entry.weights_path.is_file():
        raise RestoreError(f"weights of {entry.name!r} are missing ({entry.weights_path})")
    actual = sha256_of(entry.weights_path)
    if actual != entry.sha256:
        raise RestoreError(f"weights of {entry.name!r} fail the sha256 check (expected {entry.sha256[:12]}…, got {actual[:12]}…); refusing to load")


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a damaged or foreign file is a one-line error."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # damaged or non-safetensors file
        raise RestoreError(f"cannot read weights {path}: {exc}") from None


def apply_weights(module: nn.Module, state: dict[str, torch.Tensor], source: Path) -> nn.Module:
    """Load `state` into `module`; every tensor must match, no more, no fewer."""
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RestoreError(f"weights {source} do not match the network ({len(missing)} missing, {len(unexpected)} unexpected tensors)")
    return module


def load_weights(module: nn.Module, path: Path) -> nn.Module:
    return apply_weights(module, read_weights(path), path)


def load_network(entry: ModelEntry) -> nn.Module:
    """Build the entry's derived network and load its verified weights."""
    from restore.models.build import build
    from restore.models.genotype import load_genotype

    verify(entry)
    return load_weights(build(load_genotype(entry.genotype_path)), entry.weights_path).eval()
