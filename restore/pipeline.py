"""Files in, files out: the CLI's restore commands over many inputs.

Each file is independent: a bad file is reported in one line and skipped, the others are
processed, and a summary is printed. Inputs are never overwritten unless asked, and every
output is written atomically (see restore.io), so an interrupted run leaves no partial file.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from restore.errors import RestoreError
from restore.io import expand_inputs, output_path_for, read_image, save_like
from restore.runtime.noise import CORRELATED_NOISE_NOTE
from restore.runtime.tiling import TileConfig

OUTPUT_TASK_NAMES = {"denoise": "denoise", "denoise-real": "denoise", "derain": "derain", "deblock": "deblock"}


@dataclass
class Report:
    total: int = 0
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def _plan_outputs(paths: list[Path], task: str, output_dir: Path | None) -> dict[Path, tuple[Path, Path | None]]:
    """Each input's output path, and the earlier input that already claims it (or None).

    Inputs sharing a name (photo.png, photo.jpg) keep their extension in the output name
    (photo_png_denoise.png, photo_jpg_denoise.png), so one never overwrites or blocks the
    other's result; same-named files from different folders sent to one -o folder cannot be
    told apart that way, so all but the first are refused."""
    name = OUTPUT_TASK_NAMES.get(task, task)
    plain = {src: output_path_for(src, name, output_dir) for src in paths}
    shared = Counter(dst.resolve() for dst in plain.values())
    planned: dict[Path, tuple[Path, Path | None]] = {}
    claimed: dict[Path, Path] = {}
    for src, dst in plain.items():
        if shared[dst.resolve()] > 1:
            ext = src.suffix.lstrip(".").lower() or "noext"
            dst = dst.with_name(f"{src.stem}_{ext}_{name}{dst.suffix}")
        key = dst.resolve()
        planned[src] = (dst, claimed.get(key))
        claimed.setdefault(key, src)
    return planned


def _check_output(src: Path, dst: Path, first: Path | None, overwrite: bool) -> Path:
    if first is not None:
        raise RestoreError(f"{src} and {first} would both be written to {dst}; restore them into separate folders")
    if dst.exists() and not overwrite:
        if _same_file(src, dst):  # a symlink or hard link to the input, or the input itself
            raise RestoreError(f"output {dst} would replace the input; pass --overwrite to allow it")
        raise RestoreError(f"{dst} already exists; pass --overwrite to replace it")
    return dst


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)
    except OSError:
        return False


def is_gray_stored_as_colour(pixels: np.ndarray, *, rows: int = 256) -> bool:
    """R = G = B (within one 8-bit level, for JPEG rounding): a gray picture saved as RGB.

    The default gray model fits it far better than the colour one, whose training images
    always had colour. Checked a block of rows at a time, so a colour photo is recognised
    after its first block and a large image needs no full-size temporary."""
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        return False
    tolerance = 1.0 / 255 + 1e-6
    for top in range(0, pixels.shape[0], rows):
        block = pixels[top:top + rows]
        if (np.abs(block[..., 0] - block[..., 1]).max(initial=0) > tolerance
                or np.abs(block[..., 1] - block[..., 2]).max(initial=0) > tolerance):
            return False
    return True


def _check_model_task(task: str, model: str) -> None:
    """`restore denoise -m derain` is a slip, not a wish: refuse it with the command that fits
    (denoise and denoise-real models both run under `restore denoise`)."""
    from restore.restorer import entry_for

    entry = entry_for(model)  # the entry only: loading (or a TensorRT build) waits for the first file
    command = OUTPUT_TASK_NAMES.get(entry.task, entry.task)
    if command != OUTPUT_TASK_NAMES.get(task, task):
        raise RestoreError(f"{entry.name} is a {entry.task} model: run it with `restore {command} … -m {model}`")


class _RestorerCache:
    """One restorer per image type (gray/colour) so mixed folders get the right default."""

    def __init__(self, task, model, **kwargs):
        self.task, self.model, self.kwargs, self.cache = task, model, kwargs, {}

    def get(self, channels: int):
        from restore.restorer import load

        key = channels if self.model is None else "named"
        if key not in self.cache:
            self.cache[key] = load(self.model, task=self.task, channels=channels, **self.kwargs)
        return self.cache[key]


def restore_files(task: str, inputs, *, output_dir: Path | None = None, model: str | None = None,
                  sigma: float | None = None, tile: TileConfig | None = None, backend: str = "torch",
                  device: str = "auto", overwrite: bool = False, max_pixels: int | None = None,
                  onnx_path: Path | None = None, dcn_plugin: str | None = None, ensemble: bool = False,
                  precision: str = "auto", echo: Callable[[str], None] = print) -> Report:
    if sigma is not None and not (math.isfinite(sigma) and sigma >= 0):  # once, not once per file
        raise RestoreError(f"--sigma must be a finite number ≥ 0, got {sigma:g}")
    paths = expand_inputs(inputs)
    if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1):
        raise RestoreError(f"--max-pixels must be a positive number of pixels, got {max_pixels!r}")
    if output_dir is not None:
        output_dir = Path(output_dir)
        if output_dir.exists() and not output_dir.is_dir():
            raise RestoreError(f"--output-dir {output_dir} is a file, not a folder")
    if model is not None:
        _check_model_task(task, model)
    restorers = _RestorerCache(task, model, backend=backend, device=device, tile=tile, onnx_path=onnx_path,
                               dcn_plugin=dcn_plugin, ensemble=ensemble, precision=precision)
    report = Report(total=len(paths))
    single = len(paths) == 1
    outputs = _plan_outputs(paths, task, output_dir)
    for src in _progress(paths, enabled=not single):
        try:
            dst = _check_output(src, *outputs[src], overwrite)
            image = read_image(src, max_pixels=max_pixels)
            gray = model is None and is_gray_stored_as_colour(image.pixels)
            restorer = restorers.get(1 if gray else image.pixels.shape[2])
            try:
                out = restorer.restore_array(image.pixels[..., 1:2] if gray else image.pixels, sigma=sigma)
                if gray:
                    out = np.repeat(out, 3, axis=2)  # saved as the file came: RGB
            except MemoryError:  # one huge file must not end the batch or print a traceback
                raise RestoreError(f"out of memory restoring {src} ({image.width}×{image.height}); "
                                   "try a smaller --tile or a lower --max-pixels") from None
            save_like(dst, out, image, overwrite=overwrite)
        except RestoreError as exc:
            if single:
                raise
            report.failed.append((str(src), str(exc)))
            echo(f"skipped {src}: {exc}")
            continue
        report.written.append(dst)
        info = restorer.last
        sigma_note = f", σ {'=' if sigma is not None else '≈'} {info.sigma:.1f}" if info.sigma is not None else ""
        echo(f"{src} → {dst}  ({restorer.name}{f' ×{info.ensemble}' if info.ensemble else ''}{sigma_note}, {info.seconds:.2f} s)")
        if info.correlated_noise:
            camera = camera_noise_model()
            echo(f"  note: {CORRELATED_NOISE_NOTE}" + (f": try -m {camera}" if camera else ""))
    if not single:
        echo(f"{len(report.written)} restored, {len(report.failed)} failed, of {report.total} file(s)")
    return report


def camera_noise_model() -> str | None:
    from restore.zoo.registry import default_entry

    try:
        return default_entry("denoise-real", 3).name
    except RestoreError:  # a zoo without a camera-noise model
        return None


def _progress(items, enabled: bool):
    if not enabled:
        yield from items
        return
    from rich.progress import track

    yield from track(items, description="restoring", transient=True)
