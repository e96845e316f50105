"""`Restorer`: a model plus the runtime that applies it to whole images.

It accepts numpy arrays (H×W or H×W×C, float in [0,1] or uint8/uint16), PIL images and
float tensors (H×W, C×H×W or N×C×H×W in [0,1]) and returns the same kind. Inside, it
handles what a user should not have to think about: gray models on colour images (channel
by channel), colour models on gray images, the σ map of noise-level-conditioned models (σ
estimated from the image unless given), tiling, the backend, clamping to [0, 1].
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from restore.errors import RestoreError
from restore.runtime.backends import TorchBackend
from restore.runtime.ensemble import SelfEnsemble, ensemble_transforms
from restore.runtime.noise import append_noise_map, estimate_sigma, looks_correlated
from restore.runtime.precision import resolve_precision
from restore.runtime.tiling import TileConfig, restore_tensor
from restore.zoo.registry import ModelEntry, default_entry, get_entry, load_network, load_weights, task_for_degradation


@dataclass
class RunInfo:
    """What the last call did: σ used, time, backend — shown by the CLI and the app."""

    sigma: float | None = None
    seconds: float = 0.0
    backend: str = ""
    tiles: int = 0
    ensemble: int = 0  # how many flips/rotations were averaged (8; 4 for rain, 2 for camera noise; 0: none)
    correlated_noise: bool = False  # blind σ on noise that is not white: an AWGN model leaves much of it
    extra: dict = field(default_factory=dict)


def make_backend(kind: str, module: nn.Module, *, device: str, entry: ModelEntry, onnx_path: str | Path | None = None,
                 tile: int | None = None, dcn_plugin: str | None = None, precision: str = "auto"):
    """torch | onnx | tensorrt — the heavy ones are imported only when asked for.

    TensorRT only: `tile` is the engine's optimal H×W (the tile size the runtime will feed;
    None: the default tile) and `dcn_plugin` the plugin for DCN layers ("builtin", the
    default, or "restore"); passing `dcn_plugin` to another backend is an error.
    torch only: `precision` fp32, bf16 or auto (bf16 where the device computes it natively,
    `restore.runtime.precision`); the exported backends run the float32 graph, so asking
    them for bf16 is an error."""
    if dcn_plugin is not None and kind != "tensorrt":
        raise RestoreError(f"--dcn-plugin only applies to --backend tensorrt, not {kind}")
    resolve_precision(precision)  # an unknown name is refused whatever the backend
    if kind != "torch" and precision == "bf16":
        raise RestoreError(f"--precision bf16 only applies to --backend torch, not {kind}")
    if kind == "torch":
        return TorchBackend(module, device=device, precision=precision)
    if kind == "onnx":
        from restore.export.ort_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend.for_model(module, entry=entry, device=device, onnx_path=onnx_path)
    if kind == "tensorrt":
        from restore.export.tensorrt import TensorRTBackend

        return TensorRTBackend.for_model(module, entry=entry, device=device, onnx_path=onnx_path,
                                         tile=tile or TileConfig().tile, dcn_plugin=dcn_plugin or "builtin")
    raise RestoreError(f"unknown backend {kind!r} (choose torch, onnx or tensorrt)")


class Restorer:
    def __init__(self, module: nn.Module, entry: ModelEntry, *, backend: str = "torch", device: str = "auto",
                 tile: TileConfig | None = None, onnx_path: str | Path | None = None, dcn_plugin: str | None = None,
                 ensemble: bool = False, precision: str = "auto"):
        """`ensemble`: average the flips/rotations of every tile (`SelfEnsemble`): 8× the time; fewer for
        rain and camera noise, which only some transforms leave alike (`ensemble_transforms`).
        `precision` (torch backend): auto (bf16 autocast where native, 1.8–2.5× faster here), fp32 or bf16."""
        self.entry = entry
        self.ensemble = ensemble
        self.module = module.eval()
        self.size_multiple = int(getattr(module, "size_multiple", 1))
        self.tile = (tile if tile is not None else TileConfig(model_default=True)).for_model(entry.tile)
        self.backend = make_backend(backend, module, device=device, entry=entry, onnx_path=onnx_path,
                                    tile=self.tile.tile, dcn_plugin=dcn_plugin, precision=precision)
        self.last = RunInfo()

    # ---------------------------------------------------------------- facts
    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def task(self) -> str:
        return self.entry.task

    @property
    def channels(self) -> int:
        return self.entry.channels

    @property
    def ensemble_transforms(self) -> tuple[int, ...]:
        """The flips/rotations the self-ensemble averages for this model's task."""
        return ensemble_transforms(self.task)

    def profile(self, size: int = 256):
        from restore.runtime.profile import profile_module

        return profile_module(self.module, self.channels + int(self.entry.noise_map), size=size)

    # ---------------------------------------------------------------- calls
    def __call__(self, image, *, sigma: float | None = None, progress=None):
        """Restore numpy / PIL / tensor input; returns the same kind.

        Float input must be in [0, 1] (a little beyond is fine: unclipped noise); 0–255
        floats, NaN/inf pixels and empty images are refused with a `RestoreError`."""
        if isinstance(image, torch.Tensor):
            return self._restore_tensor_input(image, sigma=sigma, progress=progress)
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover - pillow is a base dependency
            Image = None
        if Image is not None and isinstance(image, Image.Image):
            return self._restore_pil(image, sigma=sigma, progress=progress)
        if isinstance(image, np.ndarray):
            return self._restore_numpy(image, sigma=sigma, progress=progress)
        raise RestoreError(f"cannot restore a {type(image).__name__}: pass a numpy array, PIL image or tensor")

    def restore_array(self, pixels: np.ndarray, *, sigma: float | None = None, progress=None,
                      ensemble: bool | None = None, check_noise: bool = True) -> np.ndarray:
        """H×W×C float32 in [0,1] → H×W×C float32 in [0,1] (C = 1 or 3).

        `ensemble` overrides the restorer's own setting for this call (the app's checkbox).
        `check_noise=False` skips the correlated-noise check of blind calls (one more σ
        estimate), for callers that never show its note, such as timed evaluation.

        Memory stays a small multiple of the image: a gray model restores a colour image one
        channel at a time, the σ map is appended per batch of tiles (not as a full-size
        plane), and each result is clamped straight into the output array."""
        if pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
            raise RestoreError(f"expected an H×W×C image with 1 or 3 channels, got shape {pixels.shape}")
        _refuse_empty(pixels.shape)
        t0 = time.perf_counter()
        used_sigma, correlated = None, False
        fn = self.backend
        if self.entry.noise_map:
            if sigma is not None:
                used_sigma = self._valid_sigma(sigma)
            else:
                used_sigma = estimate_sigma(pixels)
                correlated = check_noise and looks_correlated(pixels, used_sigma)
            fn = _WithNoiseMap(self.backend, used_sigma)
        elif sigma is not None and self.task.startswith("denoise"):
            raise RestoreError(f"model {self.name!r} is trained for one noise level and takes no --sigma")
        ensemble = self.ensemble if ensemble is None else ensemble
        averaged = self.ensemble_transforms if ensemble else ()
        if averaged:
            fn = SelfEnsemble(fn, averaged)
        h, w, c = pixels.shape
        # gray model: each channel alone; colour model: all channels (a gray image replicated)
        groups = [slice(k, k + 1) for k in range(c)] if self.channels == 1 else [slice(0, c)]
        result = np.empty((h, w, c), np.float32)
        for n, group in enumerate(groups):
            x = torch.from_numpy(_plane_view(pixels[..., group].transpose(2, 0, 1)))[None]
            if x.shape[1] != self.channels:  # colour model, gray image: replicate, then average back
                x = x.expand(-1, self.channels, -1, -1)
            step = None if progress is None else (
                lambda done, total, n=n: progress(done + n * total, total * len(groups)))
            out = restore_tensor(fn, x, config=self.tile, size_multiple=self.size_multiple,
                                 out_channels=self.channels, progress=step)
            del x
            if out.shape[1] != result[..., group].shape[2]:
                out = out.mean(dim=1, keepdim=True)
            result[..., group] = out[0].clamp_(0, 1).permute(1, 2, 0).numpy()
            del out
        self.last = RunInfo(sigma=used_sigma, seconds=time.perf_counter() - t0, backend=self.backend.describe(),
                            ensemble=len(averaged), correlated_noise=correlated)
        return result

    def _valid_sigma(self, sigma) -> float:
        """The user's σ (0–255 scale) as a float, refused if the model was not trained for it:
        NaN or inf would poison every pixel, and far beyond the range the output is garbage."""
        try:
            value = float(sigma)
        except (TypeError, ValueError):
            raise RestoreError(f"σ must be a number, got {sigma!r}") from None
        top = self.entry.level_range[1] if self.entry.level_range else math.inf
        if math.isfinite(value) and 0 <= value <= top:
            return value
        if self.entry.level_range:
            raise RestoreError(f"σ must be between 0 and {top:g} (the range {self.name} was trained for), "
                               f"got {value:g}")
        raise RestoreError(f"σ must be a finite number ≥ 0, got {value:g}")

    def _restore_numpy(self, image: np.ndarray, **kw) -> np.ndarray:
        if image.ndim not in (2, 3):
            raise RestoreError(f"expected an H×W or H×W×C array, got shape {image.shape}")
        _refuse_empty(image.shape)
        arr, kind = _to_unit_float(image)
        squeeze = arr.ndim == 2
        if squeeze:
            arr = arr[..., None]
        alpha = None
        if arr.shape[2] in (2, 4):  # pass alpha through untouched
            arr, alpha = arr[..., :-1], arr[..., -1:]
        out = self.restore_array(arr, **kw)
        if alpha is not None:
            out = np.concatenate([out, alpha], axis=2)
        if squeeze:
            out = out[..., 0]
        return _from_unit_float(out, kind)

    def _restore_pil(self, image, **kw):
        """L, LA, RGB, RGBA and 16-bit gray (I;16*, and I holding 0–65535) come back in their
        own mode. Every other mode is converted on the way in and comes back converted: a
        palette (P/PA) or CMYK/YCbCr/LAB/1/F… image returns as RGB, or RGBA when it carries
        transparency. A palette is a deliberate loss: the restored pixels take colours the
        palette does not have, so re-quantising them would undo part of the restoration."""
        from PIL import Image

        mode = image.mode
        if mode.startswith("I;16") or mode == "I":
            return self._restore_pil_16bit(image, **kw)
        if mode not in ("L", "RGB", "RGBA", "LA"):
            image = image.convert("RGBA" if "A" in mode or "transparency" in image.info else "RGB")
        out = self._restore_numpy(np.asarray(image), **kw)
        return Image.fromarray(out)

    def _restore_pil_16bit(self, image, **kw):
        """Through uint16, so no precision is lost, and back into the same mode and byte order."""
        from PIL import Image

        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise RestoreError(f"a mode {image.mode} image must hold 16-bit values (0–65535), "
                               f"got {values.min()}–{values.max()}")
        out = self._restore_numpy(values.astype(np.uint16), **kw)
        return Image.frombytes(image.mode, image.size, out.astype(values.dtype).tobytes())

    def _restore_tensor_input(self, t: torch.Tensor, **kw) -> torch.Tensor:
        if t.ndim == 2:  # H×W: a gray image, as for a 2-D numpy array
            return self._restore_tensor_input(t[None], **kw)[0]
        if t.ndim not in (3, 4) or t.shape[-3] not in (1, 3):
            raise RestoreError(f"expected a C×H×W or N×C×H×W tensor with 1 or 3 channels, "
                               f"got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise RestoreError(f"tensors must be float in [0, 1], got {t.dtype} (divide 0–255 data by 255)")
        _refuse_empty(tuple(t.shape))
        items = t.detach().cpu().float().numpy().reshape(-1, *t.shape[-3:])
        _check_unit_range(items)  # the whole batch before any of it is restored
        outs = [self.restore_array(x.transpose(1, 2, 0), **kw).transpose(2, 0, 1) for x in items]
        return torch.from_numpy(np.stack(outs)).reshape(t.shape).to(t.device)


def _plane_view(arr: np.ndarray) -> np.ndarray:
    """The channel(s) as C×H×W float32 without copying when possible: tiles are cut (and
    copied) from this view batch by batch, so a full-size copy would only cost memory."""
    if arr.dtype == np.float32 and arr.flags.writeable and all(s >= 0 for s in arr.strides):
        return arr
    return np.ascontiguousarray(arr, dtype=np.float32)


class _WithNoiseMap:
    """A backend that appends the constant σ map to each batch of tiles it is given."""

    def __init__(self, backend, sigma: float):
        self.backend, self.sigma = backend, sigma
        self.device = getattr(backend, "device", "cpu")

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.backend(append_noise_map(batch, self.sigma))


def _to_unit_float(image: np.ndarray) -> tuple[np.ndarray, np.dtype]:
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0, image.dtype
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0, image.dtype
    if np.issubdtype(image.dtype, np.floating):
        _check_unit_range(image)
        return image.astype(np.float32), image.dtype
    raise RestoreError(f"unsupported array dtype {image.dtype}: use uint8, uint16 or float in [0, 1]")


# How far beyond [0, 1] float pixels may go. Benchmark noise is not clipped, so noisy input
# legitimately overshoots: at the top trained σ of 75/255 ≈ 0.29, 6σ ≈ 1.8 is practically
# never reached. 0–255 (or 0–65535) floats land far beyond and would clip to white.
FLOAT_SLACK = 2.0


def _check_unit_range(pixels: np.ndarray) -> None:
    """Refuse float pixels that cannot be [0, 1] data (clipping them would return garbage)."""
    if pixels.size == 0:
        return
    low, high = float(pixels.min()), float(pixels.max())  # NaN or inf shows up in one of the two
    if not (math.isfinite(low) and math.isfinite(high)):
        raise RestoreError("the image has NaN or infinite pixels")
    if low < -FLOAT_SLACK or high > 1 + FLOAT_SLACK:
        raise RestoreError(f"float pixels must be in [0, 1], got {low:g}–{high:g} (divide 0–255 data by 255)")


def _refuse_empty(shape: tuple) -> None:
    if 0 in shape:
        raise RestoreError(f"the image is empty (shape {tuple(shape)})")


def _from_unit_float(image: np.ndarray, kind: np.dtype) -> np.ndarray:
    if kind == np.uint8:
        return np.round(image * 255.0).astype(np.uint8)
    if kind == np.uint16:
        return np.round(image * 65535.0).astype(np.uint16)
    return image.astype(kind)


# -------------------------------------------------------------------- loading


def entry_for_run(run_dir: Path) -> tuple[ModelEntry, Path]:
    """A training run directory as a model: its genotype, best (EMA) weights and task."""
    import json

    from restore.models.genotype import load_genotype

    weights = next((run_dir / n for n in ("best.safetensors", "last.safetensors", "model.safetensors") if (run_dir / n).is_file()), None)
    if weights is None or not (run_dir / "genotype.json").is_file():
        raise RestoreError(f"{run_dir} has no genotype.json and weights (best/last/model.safetensors)")
    g = load_genotype(run_dir / "genotype.json")
    task = "denoise"
    cfg_path = run_dir / "config.json"
    if cfg_path.is_file():
        degradation = json.loads(cfg_path.read_text()).get("degradation", "awgn")
        task = task_for_degradation(degradation)
    entry = ModelEntry(name=run_dir.name, task=task, channels=g.in_channels, noise_map=g.noise_map, space=g.space)
    return entry, weights


def run_network(run_dir: Path) -> tuple[nn.Module, ModelEntry]:
    """A training run directory's derived network (best weights, eval mode) and its entry."""
    from restore.models.build import build
    from restore.models.genotype import load_genotype

    entry, weights = entry_for_run(run_dir)
    return load_weights(build(load_genotype(run_dir / "genotype.json")), weights).eval(), entry


def entry_for(name: str | Path) -> ModelEntry:
    """The entry `network_for(name)` would load, without loading any weights."""
    return entry_for_run(Path(name))[0] if Path(str(name)).is_dir() else get_entry(str(name))


def network_for(name: str | Path) -> tuple[nn.Module, ModelEntry]:
    """A zoo model by name or a training run folder: its network (eval mode) and entry."""
    if Path(str(name)).is_dir():
        return run_network(Path(name))
    entry = get_entry(str(name))
    return load_network(entry), entry


def load(name: str | Path | None = None, *, task: str = "denoise", channels: int = 1, backend: str = "torch",
         device: str = "auto", tile: TileConfig | None = None, onnx_path: str | Path | None = None,
         dcn_plugin: str | None = None, ensemble: bool = False, precision: str = "auto") -> Restorer:
    """A ready-to-use restorer: a zoo model name, a training run folder, or the task default.

    `dcn_plugin` (TensorRT backend only): "builtin" or "restore", see `make_backend`;
    `ensemble`: the self-ensemble (×8; ×4 for rain, ×2 for camera noise), see `Restorer`;
    `precision` (torch backend): "auto" (bf16 autocast where the CPU or GPU computes bf16
    natively), "fp32" or "bf16", see `restore.runtime.precision`."""
    if name is None:
        entry = default_entry(task, channels)
        module = load_network(entry)
    else:
        module, entry = network_for(name)
    return Restorer(module, entry, backend=backend, device=device, tile=tile, onnx_path=onnx_path,
                    dcn_plugin=dcn_plugin, ensemble=ensemble, precision=precision)
