"""`restore eval`: PSNR/SSIM tables of one or more systems over a test folder.

Every system sees exactly the same inputs: the degradation of each test image depends only
on (image name, setting) — for fixed-σ AWGN it is the DnCNN benchmark protocol (numpy seed 0
per image, noisy input not clipped). Outputs are clipped to [0, 1] before scoring.
"""

from __future__ import annotations

import time
from itertools import islice
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from restore.data import AWGN, EvalSet, PairedFolder, degradation_from_spec, list_images, rain100l_pairing
from restore.errors import RestoreError
from restore.metrics import psnr, ssim
from restore.runtime.tiling import TileConfig, restore_tensor


@dataclass
class EvalOptions:
    degradation: str = "awgn:25"
    channels: int = 1
    crop: int = 0
    y_channel: bool = False
    sigma_mode: str = "known"  # known | estimate
    tile: TileConfig | None = None
    limit: int | None = None
    clean_dir: Path | None = None
    task: str = "denoise"
    precision: str = "fp32"  # torch numerics of every system; fp32 scores the reference, "auto" what users run


@dataclass
class System:
    name: str
    run: Callable[[np.ndarray], np.ndarray]  # H×W×C degraded → H×W×C restored
    params: int | None = None
    flops_per_mp: float | None = None  # FLOPs per megapixel of one image channel set


def _known_sigma(options: EvalOptions) -> float | None:
    if options.clean_dir is not None:
        return None
    deg = degradation_from_spec(options.degradation)
    return deg.sigma if isinstance(deg, AWGN) else None


ENSEMBLE_SUFFIX = "+x8"  # `-m denoise-gray+x8`: that model with its self-ensemble (×8; ×4 for derain, ×2 for denoise-real)


def _zoo_system(spec: str | None, options: EvalOptions) -> System:
    from restore.restorer import load
    from restore.runtime.profile import count_parameters, flops_per_megapixel

    ensemble = spec is not None and spec.endswith(ENSEMBLE_SUFFIX)
    if ensemble:
        spec = spec.removesuffix(ENSEMBLE_SUFFIX) or None  # "+x8" alone: the task's default model
    restorer = load(spec, task=options.task, channels=options.channels, tile=options.tile or TileConfig(tile=None),
                    ensemble=ensemble, precision=options.precision)
    sigma = _known_sigma(options) if options.sigma_mode == "known" and restorer.entry.noise_map else None
    if options.sigma_mode not in ("known", "estimate"):
        raise RestoreError("--sigma must be 'known' or 'estimate'")
    averaged = len(restorer.ensemble_transforms) if ensemble else 1
    label = restorer.name + (f" ×{averaged}" if ensemble else "")
    label += " (σ estimated)" if restorer.entry.noise_map and sigma is None else ""
    label += f" ({restorer.tile.tile}² tiles)" if restorer.tile.tile is not None else ""
    in_channels = restorer.entry.channels + (1 if restorer.entry.noise_map else 0)
    flops = flops_per_megapixel(restorer.module, in_channels) * averaged
    # a gray model serves colour images channel by channel: three passes per pixel
    if restorer.entry.channels == 1 and options.channels == 3:
        flops *= 3

    def run(x: np.ndarray) -> np.ndarray:  # eval shows no correlated-noise note: keep its check out of the timing
        return restorer.restore_array(x, sigma=sigma, check_noise=False)

    return System(label, run, count_parameters(restorer.module), flops)


def _dncnn_system(path: str, options: EvalOptions) -> System:
    from restore.models.dncnn import load_peer
    from restore.runtime.backends import TorchBackend
    from restore.runtime.profile import count_parameters, flops_per_megapixel

    net = load_peer(Path(path))
    backend = TorchBackend(net, device="cpu", precision=options.precision)

    def run(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))).unsqueeze(1)  # channels as a batch of gray images
        y = restore_tensor(backend, t, config=TileConfig(tile=None), out_channels=1)
        return y.clamp(0, 1)[:, 0].numpy().transpose(1, 2, 0)

    return System("DnCNN (peer)", run, count_parameters(net), flops_per_megapixel(net, 1) * options.channels)


def _bm3d_system(options: EvalOptions) -> System:
    try:
        import bm3d
    except ImportError:
        raise RestoreError("BM3D needs the bm3d package: pip install 'restore[bench]'") from None
    sigma = _known_sigma(options)
    if sigma is None:
        raise RestoreError("BM3D is evaluated at a known AWGN σ only")

    def run(x: np.ndarray) -> np.ndarray:
        if x.shape[2] == 3:
            return np.clip(bm3d.bm3d_rgb(x, sigma / 255.0), 0, 1).astype(np.float32)
        return np.clip(bm3d.bm3d(x[..., 0], sigma / 255.0), 0, 1).astype(np.float32)[..., None]

    return System("CBM3D" if options.channels == 3 else "BM3D", run)


def make_system(spec: str | None, options: EvalOptions) -> System:
    if spec is not None and spec.startswith("dncnn:"):
        return _dncnn_system(spec.split(":", 1)[1], options)
    if spec in ("bm3d", "cbm3d"):
        return _bm3d_system(options)
    return _zoo_system(spec, options)


def _dataset(folder: Path, options: EvalOptions):
    if options.clean_dir is not None:
        try:
            pairs = PairedFolder(folder, options.clean_dir, channels=options.channels)
        except RestoreError:  # Rain100L names pairs rain-001.png ↔ norain-001.png
            if not all(p.name.startswith("rain-") for p in list_images(folder)):
                raise  # "no clean partner for X": the same-name pairing the user asked for
            pairs = PairedFolder(folder, options.clean_dir, channels=options.channels, pairing=rain100l_pairing)
        for i, name in enumerate(pairs.names):
            degraded, clean = pairs[i]
            yield name, degraded.numpy().transpose(1, 2, 0), clean.numpy().transpose(1, 2, 0)
    else:
        yield from EvalSet(folder, options.degradation, options.channels)


def _scores(pred: np.ndarray, clean: np.ndarray, options: EvalOptions) -> tuple[float, float]:
    kw = dict(data_range=1.0, crop_border=options.crop, y_channel=options.y_channel)
    return psnr(pred, clean, **kw), ssim(pred, clean, **kw)


def evaluate_models(folder: str | Path, specs: list[str | None], options: EvalOptions, *, progress: bool = False) -> dict:
    folder = Path(folder)
    systems = [make_system(spec, options) for spec in specs]
    names = ["input"] + [s.name for s in systems]
    rows: list[dict] = []
    seconds = {s.name: 0.0 for s in systems}
    megapixels = 0.0
    if options.limit is not None and options.limit < 1:
        raise RestoreError(f"--limit must be at least 1, got {options.limit}")
    items = list(islice(_dataset(folder, options), options.limit))  # read only the images scored
    if not items:
        raise RestoreError(f"no test images in {folder}")
    iterator = items
    if progress:
        from rich.progress import track

        iterator = track(items, description="evaluating", transient=True)
    for name, degraded, clean in iterator:
        row = {"image": name, "input": _scores(np.clip(degraded, 0, 1), clean, options)}
        megapixels += degraded.shape[0] * degraded.shape[1] / 1e6
        for system in systems:
            t0 = time.perf_counter()
            out = system.run(degraded)
            seconds[system.name] += time.perf_counter() - t0
            row[system.name] = _scores(np.clip(out, 0, 1), clean, options)
        rows.append(row)
    summary = {
        n: {"psnr": float(np.mean([r[n][0] for r in rows])), "ssim": float(np.mean([r[n][1] for r in rows]))}
        for n in names
    }
    for system in systems:
        summary[system.name].update(params=system.params, seconds=seconds[system.name],
                                    flops_per_mp=system.flops_per_mp,
                                    mp_per_s=megapixels / seconds[system.name] if seconds[system.name] > 0 else None)
    setting = options.degradation if options.clean_dir is None else f"pairs with {options.clean_dir}"
    return {"folder": str(folder), "setting": setting, "channels": options.channels, "images": len(rows),
            "systems": names, "mean": summary, "per_image": rows}


def render_markdown(result: dict, *, per_image: bool = False) -> str:
    names = result["systems"]
    head = f"{Path(result['folder']).name} — {result['setting']} — {result['images']} image{'s' if result['images'] != 1 else ''}, PSNR (dB) / SSIM"
    lines = [head, "", "| system | PSNR | SSIM | params | GFLOPs/MP | MP/s | time (s) |", "|---|---|---|---|---|---|---|"]
    for n in names:
        m = result["mean"][n]
        params = f"{m['params']:,}" if m.get("params") else "–"
        flops = f"{m['flops_per_mp'] / 1e9:.0f}" if m.get("flops_per_mp") else "–"
        speed = f"{m['mp_per_s']:.2f}" if m.get("mp_per_s") else "–"
        secs = f"{m['seconds']:.1f}" if "seconds" in m else "–"
        lines.append(f"| {n} | {m['psnr']:.2f} | {m['ssim']:.4f} | {params} | {flops} | {speed} | {secs} |")
    if per_image:
        lines += ["", "| image | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for r in result["per_image"]:
            lines.append(f"| {r['image']} | " + " | ".join(f"{r[n][0]:.2f}" for n in names) + " |")
    return "\n".join(lines)
