"""What the app does, without gradio: check an upload, optionally degrade it (try-it mode),
restore it with a cached `Restorer`, measure, and write the full-resolution PNG.

`ui.py` only maps widgets to `AppService` and turns `RestoreError` into `gr.Error`, so all
behaviour here is testable without a server. Every user mistake is one `RestoreError` line.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from restore.errors import RestoreError
from restore.io import LoadedImage, read_image, save_like
from restore.runtime.noise import CORRELATED_NOISE_NOTE
from restore.runtime.tiling import TileConfig
from restore.zoo.registry import TASKS, ModelEntry, task_for_degradation

AUTO = "auto"
TASK_LABELS = {"denoise": "Denoise", "denoise-real": "Real camera noise", "derain": "Derain", "deblock": "Deblock (JPEG)"}
# try-it mode: label → degradation spec prefix (σ / quality are appended by `degradation_spec`)
DEGRADATIONS = {
    "none": None,
    "Gaussian noise (σ)": "awgn",
    "JPEG compression (quality)": "jpeg",
    "Rain streaks (light)": "rain:light",
    "Rain streaks (heavy)": "rain:heavy",
    "Rain streaks (torrent)": "rain:torrent",
    "Rain streaks (textured, Rain100H-like)": "rain:textured",
    "Camera noise": "camera",
}
MIN_SIDE = 16  # below this, SSIM and reflect padding make no sense
OUTPUT_TTL_S = 3600  # result PNGs older than this are pruned

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class Limits:
    max_pixels: int = 4_000_000  # searched nets cost ~0.1–0.5 TFLOPs/MP: minutes on a CPU beyond this
    max_upload_bytes: int = 25 * 1024 * 1024


# --------------------------------------------------------------------------- models


class Catalog(Protocol):
    """Where models come from: the zoo by default; tests inject their own."""

    def entries(self) -> list[ModelEntry]: ...

    def default(self, task: str, channels: int) -> ModelEntry: ...

    def load(self, entry: ModelEntry, *, backend: str, device: str, tile: TileConfig): ...


class ZooCatalog:
    """The shipped zoo; `precision` is the torch backend's (auto: bf16 where native)."""

    def __init__(self, precision: str = "auto"):
        self.precision = precision

    def entries(self) -> list[ModelEntry]:
        from restore.zoo.registry import list_entries

        return list_entries()

    def default(self, task: str, channels: int) -> ModelEntry:
        from restore.zoo.registry import default_entry

        return default_entry(task, channels)

    def load(self, entry: ModelEntry, *, backend: str, device: str, tile: TileConfig):
        from restore.restorer import load

        return load(entry.name, backend=backend, device=device, tile=tile, precision=self.precision)


@dataclass
class _Slot:
    """A loaded restorer and the lock that serialises its use (`.last` is per instance)."""

    restorer: object
    lock: threading.Lock = field(default_factory=threading.Lock)
    profile: object = None


class RestorerCache:
    """One restorer per (model, backend), loaded once, even under concurrent requests."""

    def __init__(self, catalog: Catalog, *, backend: str, device: str, tile: TileConfig):
        self.catalog, self.backend, self.device, self.tile = catalog, backend, device, tile
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._lock = threading.Lock()

    def get(self, entry: ModelEntry) -> _Slot:
        key = (entry.name, self.backend)
        with self._lock:  # loading under the lock: two first requests must not load twice
            if key not in self._slots:
                restorer = self.catalog.load(entry, backend=self.backend, device=self.device, tile=self.tile)
                self._slots[key] = _Slot(restorer)
            return self._slots[key]


# --------------------------------------------------------------------------- pure steps


def load_upload(path: str | Path | None, limits: Limits) -> LoadedImage:
    """Read an uploaded file with the size limits; messages never show the server's temp path."""
    if path is None or str(path) == "":
        raise RestoreError("upload an image (or pick an example) first")
    path = Path(path)
    if path.is_file() and path.stat().st_size > limits.max_upload_bytes:
        raise RestoreError(f"the file is {_mb(path.stat().st_size)}, above the upload limit of {_mb(limits.max_upload_bytes)}")
    try:
        image = read_image(path, max_pixels=limits.max_pixels)
    except RestoreError as exc:
        raise RestoreError(_public_message(str(exc), path)) from None
    if min(image.height, image.width) < MIN_SIDE:
        raise RestoreError(f"the image is {image.width}×{image.height}; it needs at least {MIN_SIDE}×{MIN_SIDE} pixels")
    return image


def _public_message(message: str, path: Path) -> str:
    # read_image names the server's temp file, which means nothing on a web page
    return web_message(message.replace(f"'{path}'", "the upload").replace(str(path), "the upload"))


def web_message(message: str) -> str:
    """Drop hints aimed at CLI users ("(see `restore models`)", "(set --max-pixels)")."""
    return re.sub(r" \((see `restore [^`]*`|set --[a-z-]+)\)", "", message)


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def degradation_spec(kind: str, sigma: float = 25, quality: int = 20) -> str | None:
    """A try-it choice (a `DEGRADATIONS` label) → a spec for `degradation_from_spec`."""
    if kind not in DEGRADATIONS:
        raise RestoreError(f"unknown degradation {kind!r} (choose one of: {', '.join(DEGRADATIONS)})")
    base = DEGRADATIONS[kind]
    if base == "awgn":
        return f"awgn:{float(sigma):g}"
    if base == "jpeg":
        return f"jpeg:{int(quality)}"
    return base


def degrade(clean: np.ndarray, spec: str) -> np.ndarray:
    """Deterministic (fixed seed per spec) and clipped: what the user sees is what the model gets."""
    from restore.data.degradations import degradation_from_spec, degrade_for_eval

    degraded = degrade_for_eval(clean, "restore-app", degradation_from_spec(spec))
    return np.clip(degraded, 0.0, 1.0).astype(np.float32)


def to_display(pixels: np.ndarray) -> np.ndarray:
    """H×W×C float [0, 1] → uint8 H×W (gray) or H×W×3 for the browser."""
    u8 = np.rint(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)
    return u8[..., 0] if u8.shape[2] == 1 else u8


def quality_metrics(clean: np.ndarray, degraded: np.ndarray, restored: np.ndarray) -> dict[str, float]:
    from restore.metrics import psnr, ssim

    return {
        "psnr_in": psnr(degraded, clean, data_range=1.0),
        "psnr_out": psnr(restored, clean, data_range=1.0),
        "ssim_in": ssim(degraded, clean, data_range=1.0),
        "ssim_out": ssim(restored, clean, data_range=1.0),
    }


def safe_stem(path: str | Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).stem).strip("._")
    return stem[:80] or "image"


# --------------------------------------------------------------------------- results


@dataclass
class Result:
    before: np.ndarray  # uint8, the model's input as shown
    after: np.ndarray  # uint8, the restored image as shown
    download: Path  # full-resolution PNG
    summary: str  # Markdown for the page
    model: str
    seconds: float
    sigma: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    ensemble: int = 0  # how many flips/rotations were averaged (0: none)


def _outside_range(entry: ModelEntry, degradation: str | None) -> list[str]:
    """A note when "Try it" degrades beyond what the model was trained on (e.g. JPEG q95 for
    a q10–90 deblocker): the result may then be worse than the input, and the user should know why."""
    kind, _, level = (degradation or "").partition(":")
    if not entry.level_range or task_for_degradation(kind) != entry.task:
        return []
    try:
        value = float(level)
    except ValueError:
        return []
    low, high = entry.level_range
    if low <= value <= high:
        return []
    what = "quality" if kind == "jpeg" else "σ"
    return [f"{entry.name} was trained for {what} {low:g}–{high:g}; at {value:g} it may do more harm than good"]


class AppService:
    """The app's state: model catalog, restorer cache, limits and the output folder."""

    def __init__(self, *, catalog: Catalog | None = None, backend: str = "torch", device: str = "auto",
                 tile: TileConfig | None = None, limits: Limits = Limits(), output_dir: str | Path | None = None):
        self.catalog = catalog or ZooCatalog()
        self.backend, self.limits = backend, limits
        self.cache = RestorerCache(self.catalog, backend=backend, device=device, tile=tile or TileConfig(model_default=True))
        if output_dir:
            self.output_dir = Path(output_dir)
            self.output_dir.mkdir(parents=True, exist_ok=True)
        else:  # our own scratch folder: removed with the service, or at interpreter exit
            self.output_dir = Path(tempfile.mkdtemp(prefix="restore-app-"))
            self._cleanup = weakref.finalize(self, shutil.rmtree, self.output_dir, ignore_errors=True)

    # ---- model choices
    def model_choices(self, task: str) -> list[str]:
        return [AUTO] + [e.name for e in self.catalog.entries() if e.task == task]

    def resolve(self, task: str, model: str, channels: int) -> ModelEntry:
        if task not in TASKS:
            raise RestoreError(f"unknown task {task!r} (choose one of: {', '.join(TASKS)})")
        if model in (None, "", AUTO):
            return self.catalog.default(task, channels)
        for entry in self.catalog.entries():
            if entry.name == model:
                if entry.task != task:  # e.g. an API call pairing derain with a denoiser
                    raise RestoreError(f"{model} is a {entry.task} model; for {task} pick one of: "
                                       f"{', '.join(self.model_choices(task))}")
                return entry
        raise RestoreError(f"unknown model {model!r}; pick one from the list")

    def describe(self, task: str, model: str) -> str:
        """One Markdown line about the chosen model (before any image is uploaded)."""
        try:
            if model in (None, "", AUTO):  # the pick depends on the image: say what it will be
                gray, colour = (self.resolve(task, AUTO, c).name for c in (1, 3))
                picks = f"**{gray}**" if gray == colour else f"**{gray}** for gray images, **{colour}** for colour ones"
                return f"auto → {picks}"
            entry = self.resolve(task, model, 1)
        except RestoreError as exc:
            return f"⚠️ {web_message(str(exc))}"
        kind = "gray" if entry.channels == 1 else "colour"
        levels = f", σ {entry.level_range[0]:g}–{entry.level_range[1]:g}" if entry.level_range and entry.task.startswith("denoise") else ""
        text = f"**{entry.name}** · {kind}{levels}"
        return f"{text} — {entry.description}" if entry.description else text

    # ---- one request
    def run(self, image_path, *, task: str, model: str = AUTO, sigma: float | None = None,
            degradation: str | None = None, ensemble: bool = False, progress: Progress | None = None) -> Result:
        report = progress or (lambda fraction, message: None)
        report(0.0, "reading the image")
        image = load_upload(image_path, self.limits)
        entry = self.resolve(task, model, image.pixels.shape[2])
        notes: list[str] = []
        if sigma is not None and not entry.noise_map:
            notes.append(f"{entry.name} is trained for one noise level, so the σ setting was not used")
            sigma = None
        if not task.startswith("denoise"):
            sigma = None
        notes += _outside_range(entry, degradation)

        clean = image.pixels if degradation else None
        model_input = degrade(clean, degradation) if degradation else image.pixels
        report(0.05, f"loading {entry.name}")
        slot = self.cache.get(entry)
        tiles = lambda done, total: report(0.1 + 0.85 * done / max(total, 1), f"restoring: tile {done}/{total}")
        with slot.lock:
            restored = slot.restorer.restore_array(model_input, sigma=sigma, progress=tiles, ensemble=ensemble)
            info = slot.restorer.last
            if slot.profile is None:
                slot.profile = _profile(slot.restorer)
        if info.correlated_noise:
            notes.append(self._correlated_noise_note())
        report(0.96, "writing the result")
        download = self._write(restored, image, image_path, task)
        metrics = quality_metrics(clean, model_input, restored) if clean is not None else {}
        result = Result(before=to_display(model_input), after=to_display(restored), download=download, summary="",
                        model=entry.name, seconds=info.seconds, sigma=info.sigma, metrics=metrics, notes=notes,
                        ensemble=info.ensemble)
        result.summary = summarize(result, entry, slot.profile, info.backend, sigma_given=sigma is not None,
                                   colour_by_gray=entry.channels == 1 and image.pixels.shape[2] == 3)
        report(1.0, "done")
        return result

    def _correlated_noise_note(self) -> str:
        note = CORRELATED_NOISE_NOTE[0].upper() + CORRELATED_NOISE_NOTE[1:]
        try:
            camera = self.catalog.default("denoise-real", 3).name
        except RestoreError:  # a catalog without a camera-noise model
            return f"{note}."
        return f"{note}: pick the task “{TASK_LABELS['denoise-real']}” ({camera})."

    def _write(self, restored: np.ndarray, like: LoadedImage, source, task: str) -> Path:
        self._prune()
        folder = Path(tempfile.mkdtemp(dir=self.output_dir))  # one folder per request: no name clashes
        return save_like(folder / f"{safe_stem(source)}_{task}.png", restored, like)

    def _prune(self) -> None:
        cutoff = time.time() - OUTPUT_TTL_S
        for folder in self.output_dir.glob("*"):
            try:
                if folder.is_dir() and folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
            except OSError:  # a concurrent prune got there first
                pass


def _profile(restorer):
    """Parameters and FLOPs/MP, or None: a statistic must never fail a restoration."""
    try:
        return restorer.profile()
    except Exception:
        logging.getLogger("restore.app").warning("cannot profile %s", restorer.name, exc_info=True)
        return None


def summarize(result: Result, entry: ModelEntry, profile, backend: str, *, sigma_given: bool, colour_by_gray: bool) -> str:
    """The facts under the slider: model cost, this request's time, σ, and quality if known."""
    cost = "cost unknown"
    if profile is not None:
        per_channel = " (×3: colour run channel by channel)" if colour_by_gray else ""
        cost = f"{_count(profile.params)} parameters · {profile.flops_per_mp / 1e9:.1f} GFLOPs/MP{per_channel}"
    lines = [
        f"**Model** {entry.name} · {cost}",
        f"**This request** {result.seconds:.2f} s on {backend}" + (f" · ×{result.ensemble} self-ensemble" if result.ensemble else ""),
    ]
    if result.sigma is not None:
        lines.append(f"**Noise level** σ {'=' if sigma_given else '≈'} {result.sigma:.1f}" + ("" if sigma_given else " (estimated)"))
    text = "  \n".join(lines)
    if result.metrics:
        m = result.metrics
        text += (
            "\n\n| vs. clean reference | PSNR | SSIM |\n|---|---|---|\n"
            f"| degraded input | {m['psnr_in']:.2f} dB | {m['ssim_in']:.4f} |\n"
            f"| restored | **{m['psnr_out']:.2f} dB** ({m['psnr_out'] - m['psnr_in']:+.2f}) | **{m['ssim_out']:.4f}** |"
        )
    return text


def _count(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 10_000 else f"{n:,}"
