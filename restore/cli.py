"""The `restore` command line. Each command is a thin shell over the Python API.

Heavy imports (torch models, onnx, gradio) happen inside the commands, so `restore --help`
stays fast. A `RestoreError` is printed as one line (no traceback) with exit code 2.
"""

from __future__ import annotations

import os
import signal
import sys
import warnings
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import List, Optional

import typer

from restore.errors import RestoreError

app = typer.Typer(
    name="restore",
    help="Design (NAS), train and deploy image-restoration networks: denoise, derain, deblock.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def user_errors(fn):
    """Turn user mistakes into one line on stderr and a non-zero exit."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RestoreError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            _fail("interrupted", 130)

    return wrapper


@contextmanager
def _tidy_new_run(run: Path):
    """A run that fails before writing anything (bad data, bad option) leaves no empty
    folders behind: those this command created are removed again, if still empty."""
    created = [p for p in (run, *run.parents) if not p.exists()]  # deepest first
    try:
        yield
    except BaseException:
        for folder in created:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


@app.callback()
def _root() -> None:
    """Design (NAS), train and deploy image-restoration networks: denoise, derain, deblock."""


# ------------------------------------------------------------------------------- train


def _check_data_dirs(data: Optional[List[Path]]) -> None:
    """`-d` is a degradation in `eval` but the data in `train`/`search`: a mixed-up `-d awgn:25`
    gets the right flag, not just "folder not found"."""
    from restore.data.degradations import degradation_from_spec

    for folder in data or []:
        if folder.exists():
            continue
        try:
            degradation_from_spec(str(folder))
        except RestoreError:
            continue  # not a spec either: the data loader reports the missing folder
        raise RestoreError(f"-d/--data takes folders of training images; {str(folder)!r} is a degradation: "
                           f"use --degradation {folder}")


DEVICE_HELP = ("cpu, cuda, cuda:N or auto (the default: a CUDA GPU if there is one). "
               "Checkpoints hold CPU tensors, so a run may continue on another device.")


@app.command()
@user_errors
def train(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Preset (`restore info --presets`), zoo model (its architecture, trained anew) or genotype JSON file (default: modnas-b)."),
    data: Optional[List[Path]] = typer.Option(None, "--data", "-d", help="Folder(s) of clean training images."),
    run: Path = typer.Option(Path("runs/train"), "--run", "-r", help="Run directory (config, logs, checkpoints). Re-running resumes."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="JSON config (keys of TrainConfig); flags override it."),
    degradation: Optional[str] = typer.Option(None, help="awgn:25, awgn:0-75, jpeg:10-90, rain, camera, …"),
    channels: Optional[int] = typer.Option(None, help="1 = gray, 3 = colour."),
    noise_map: Optional[bool] = typer.Option(None, "--noise-map/--no-noise-map", help="Feed a σ map: one model for a σ range."),
    steps: Optional[int] = typer.Option(None, help="Training steps (iterations)."),
    batch: Optional[int] = typer.Option(None, help="Global batch size."),
    patch: Optional[int] = typer.Option(None, help="Training patch size."),
    lr: Optional[float] = typer.Option(None, help="Initial learning rate (cosine to lr_min)."),
    loss: Optional[str] = typer.Option(None, help="mse or mse+logssim."),
    val_dir: Optional[Path] = typer.Option(None, help="Validation folder (default: hold out training images)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch."),
    seed: Optional[int] = typer.Option(None, help="Random seed (data split, patches, init) for a repeatable run (default: the config's, 0)."),
    precision: Optional[str] = typer.Option(None, help="fp32 (default), bf16 (forward pass under bf16 autocast: ~2× faster on a CPU with native bf16) or auto (bf16 where native)."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on a terminal (log lines on a pipe); --no-progress shows neither, e.g. under nohup. RUN/log.txt gets every line anyway."),
):
    """Train a derived network (a preset or a searched genotype). Resumes if RUN has a checkpoint.

    Example: restore train -m modnas-b -d Train400 --degradation awgn:0-75 --noise-map --run runs/gray
    """
    from restore.config import config_from_dict, load_config
    from restore.train.config import TrainConfig
    from restore.train.trainer import train as run_training

    _check_data_dirs(data)
    overrides = dict(
        model=model,
        train_dirs=[str(p) for p in data] if data else None,
        degradation=degradation, channels=channels, noise_map=noise_map, steps=steps, batch=batch,
        patch=patch, lr=lr, loss=loss, val_dir=str(val_dir) if val_dir else None, threads=threads, seed=seed,
        precision=precision, device=device,
    )
    saved = run / "config.json"
    if config is not None:
        cfg = load_config(TrainConfig, config, **overrides)
    elif saved.exists():  # resuming: the run's own config, flags may still override
        cfg = load_config(TrainConfig, saved, **overrides)
    else:
        cfg = config_from_dict(TrainConfig, {k: v for k, v in overrides.items() if v is not None})
    with _tidy_new_run(run):
        summary = run_training(cfg, run, show_progress=progress)
    if int(os.environ.get("RANK", "0")) != 0:  # a non-main torchrun process: rank 0 reports
        return
    typer.echo(f"done: {summary['steps']} steps, best validation PSNR {summary['best_val_psnr']:.2f} dB → {run}")


# ------------------------------------------------------------------------------- search


@app.command()
@user_errors
def search(
    space: Optional[str] = typer.Option(None, "--space", help="modnas or hinas (without --preset: the cpu-SPACE preset)."),
    preset: Optional[str] = typer.Option(None, "--preset", "-p", help="paper-modnas, paper-hinas, paper-hinas-derain, cpu-modnas (default), cpu-hinas, tiny-modnas, tiny-hinas."),
    data: Optional[List[Path]] = typer.Option(None, "--data", "-d", help="Folder(s) of clean training images (split into Train W / A / V)."),
    run: Path = typer.Option(Path("runs/search"), "--run", "-r", help="Run directory (config, logs, checkpoint, genotypes). Re-running resumes."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="JSON config (keys of SearchConfig) over the preset; flags override it."),
    steps: Optional[int] = typer.Option(None, help="Search steps (one weight update + one architecture update each)."),
    batch: Optional[int] = typer.Option(None, help="Global batch size."),
    degradation: Optional[str] = typer.Option(None, help="awgn:25, awgn:0-75, jpeg:10-90, rain, camera, …"),
    channels: Optional[int] = typer.Option(None, help="1 = gray, 3 = colour."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch."),
    seed: Optional[int] = typer.Option(None, help="Random seed (data split, patches, init) for a repeatable run (default: the config's, 0)."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on a terminal (log lines on a pipe); --no-progress shows neither, e.g. under nohup. RUN/log.txt gets every line anyway."),
):
    """Search an architecture (MoD-NAS or HiNAS supernet) and write RUN/genotype.json. Resumes if RUN has a checkpoint.

    Example: restore search --preset cpu-modnas --data ../shared/data/train/Train400 --run runs/search
    """
    from restore.search import make_config
    from restore.search import search as run_search
    from restore.search.config import SPACES
    from restore.train.run import NO_DATA

    _check_data_dirs(data)
    if space is not None and space not in SPACES:
        raise RestoreError(f"--space must be one of {', '.join(SPACES)}, got {space!r}")
    overrides = dict(
        train_dirs=[str(p) for p in data] if data else None,
        steps=steps, batch=batch, degradation=degradation, channels=channels, threads=threads, seed=seed, device=device,
    )
    saved = run / "config.json"
    if preset is None and config is None and saved.exists():  # resuming: the run's own config
        cfg = make_config(None, saved, **overrides)
    else:
        cfg = make_config(preset or f"cpu-{space or 'modnas'}", config, **overrides)
    if space is not None and cfg.space != space:
        raise RestoreError(f"the config searches the {cfg.space} space but --space is {space}; pick a {space} preset")
    if not cfg.train_dirs:
        raise RestoreError(NO_DATA)
    with _tidy_new_run(run):
        summary = run_search(cfg, run, show_progress=progress)
    if "description" not in summary:  # a non-main torchrun process: rank 0 reports
        return
    best = summary["best_val_psnr"]
    where = f"best Train V PSNR {best:.2f} dB at step {summary['best_step']}" if best is not None else "no post-warm-up evaluation"
    typer.echo(f"genotype: {summary['genotype']} ({where})")
    typer.echo(summary["description"])


# ------------------------------------------------------------------------------- restore

TileOpt = typer.Option(None, "--tile", help="Tile size for patch inference (default: the model's — 64 as in the papers; 128 for derain, its training patch size; with --backend tensorrt also the engine's optimal shape).")
RuntimeDcnPluginOpt = typer.Option(
    None, "--dcn-plugin", metavar="builtin|restore",
    help="With --backend tensorrt: how the engine runs DCN layers — 'builtin' (default): TensorRT's "
         "ModulatedDeformConv2d plugin; 'restore': the project's Triton plugin (TensorRT >= 10.6 + triton; "
         "also takes asymmetric padding).")
OverlapOpt = typer.Option(16, "--overlap", help="Overlap between tiles, blended with smooth weights.")
EnsembleOpt = typer.Option(False, "--ensemble", help="Average the model over the 8 flips/rotations of the image: "
                           "a little more quality (≈ +0.1 dB) for 8× the time (derain: the 4 that keep rain upright, "
                           "≈ +0.25 dB for 4×; denoise-real: the 2 that keep the camera mosaic in phase, ≈ +0.2 dB for 2×).")

PrecisionOpt = typer.Option("auto", "--precision", metavar="auto|fp32|bf16",
                            help="Numerics of the torch backend: auto = bf16 autocast where the CPU/GPU computes bf16 "
                                 "natively (1.8–2.5× faster on such CPUs; PSNR within a few hundredths of a dB), else fp32.")


def _tile_config(tile: Optional[int], overlap: int, no_tile: bool, batch: int = 16):
    from restore.runtime.tiling import TileConfig

    if no_tile:
        return TileConfig(tile=None, overlap=overlap, batch_size=batch)
    if tile is None:  # the model's own tile, once the model is known (`TileConfig.for_model`)
        return TileConfig(overlap=overlap, batch_size=batch, model_default=True)
    return TileConfig(tile=tile, overlap=overlap, batch_size=batch)


def _check_trt_backend(backend: str, dcn_plugin: Optional[str]) -> None:
    """--dcn-plugin belongs to --backend tensorrt; TensorRT (and for the restore plugin,
    Triton) must be installed — checked before any model is loaded, as one line."""
    if backend != "tensorrt":
        if dcn_plugin is not None:
            raise RestoreError(f"--dcn-plugin only applies to --backend tensorrt, not {backend}")
        return
    from restore.export.tensorrt import require_trt_build

    require_trt_build(dcn_plugin or "builtin")


def _check_precision(precision: str, backend: str) -> None:
    """--precision is one of auto/fp32/bf16, and bf16 needs the torch backend — checked before any work."""
    from restore.runtime.precision import PRECISIONS

    if precision not in PRECISIONS:
        raise RestoreError(f"unknown --precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and backend != "torch":
        raise RestoreError(f"--precision bf16 only applies to --backend torch, not {backend}")


def _run_task(task: str, inputs: List[str], output_dir: Optional[Path], model: Optional[str], sigma: Optional[float],
              tile: Optional[int], overlap: int, no_tile: bool, backend: str, device: str, overwrite: bool, max_pixels: int,
              onnx_file: Optional[Path], dcn_plugin: Optional[str] = None, ensemble: bool = False,
              precision: str = "auto") -> None:
    from restore.pipeline import restore_files

    _check_trt_backend(backend, dcn_plugin)
    _check_precision(precision, backend)
    if onnx_file is not None and backend == "torch":
        raise RestoreError("--onnx-file runs an exported model: add --backend onnx (or tensorrt)")
    report = restore_files(
        task, inputs, output_dir=output_dir, model=model, sigma=sigma, tile=_tile_config(tile, overlap, no_tile),
        backend=backend, device=device, overwrite=overwrite, max_pixels=max_pixels, onnx_path=onnx_file,
        dcn_plugin=dcn_plugin, ensemble=ensemble, precision=precision, echo=lambda line: typer.echo(line),
    )
    if report.failed:
        _fail(f"{len(report.failed)} of {report.total} file(s) failed", code=1)


def _task_command(task: str, summary: str, sigma_help: Optional[str]):
    def command(
        inputs: List[str] = typer.Argument(..., help="Image files, folders or glob patterns."),
        output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="Where to write NAME_<task>.png (default: beside each input)."),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Zoo model name or training run folder (default: the task's shipped model)."),
        sigma: Optional[float] = typer.Option(None, "--sigma", "-s", help=sigma_help or "Not used by this task.", hidden=sigma_help is None),
        tile: Optional[int] = TileOpt,
        overlap: int = OverlapOpt,
        no_tile: bool = typer.Option(False, "--no-tile", help="Run each image whole (more memory)."),
        backend: str = typer.Option("torch", "--backend", "-b", help="torch, onnx (ONNX Runtime) or tensorrt."),
        device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Allow replacing existing files (including the input)."),
        max_pixels: int = typer.Option(100_000_000, "--max-pixels", help="Refuse images with more pixels than this."),
        onnx_file: Optional[Path] = typer.Option(None, "--onnx-file", help="With --backend onnx/tensorrt: an exported model to run."),
        dcn_plugin: Optional[str] = RuntimeDcnPluginOpt,
        ensemble: bool = EnsembleOpt,
        precision: str = PrecisionOpt,
    ):
        _run_task(task, inputs, output_dir, model, sigma, tile, overlap, no_tile, backend, device, overwrite, max_pixels,
                  onnx_file, dcn_plugin, ensemble, precision)

    command.__doc__ = summary
    return user_errors(command)


app.command("denoise")(_task_command(
    "denoise",
    "Remove noise. Blind by default: σ is estimated per image; --sigma overrides.\n\n"
    "Example: restore denoise photo.png -o out/\n\n"
    "Gaussian noise uses denoise-gray / denoise-color (picked by the image); for camera photos with real "
    "sensor noise pick the camera-noise model: restore denoise photo.jpg -m denoise-real (a note under the "
    "file's line suggests it when the noise looks correlated between neighbouring pixels, as camera noise is)",
    "Noise level on the 0–255 scale (default: estimated from each image).",
))
app.command("derain")(_task_command("derain", "Remove rain streaks.\n\nExample: restore derain rainy.png", None))
app.command("deblock")(_task_command("deblock", "Remove JPEG compression artifacts.\n\nExample: restore deblock photo.jpg", None))


# ------------------------------------------------------------------------------- eval


@app.command("eval")
@user_errors
def eval_(
    folder: Path = typer.Argument(..., help="Folder of clean test images."),
    degradation: str = typer.Option("awgn:25", "--degradation", "-d", help="Synthetic degradation at fixed seeds: awgn:25, jpeg:20, rain, camera…"),
    model: Optional[List[str]] = typer.Option(None, "--model", "-m", help="Zoo name, run folder, dncnn:WEIGHTS, bm3d; NAME+x8 adds the self-ensemble (×8; ×4 for derain, ×2 for denoise-real). Repeat for a side-by-side table."),
    task: Optional[str] = typer.Option(None, help="Task whose default model is scored when no -m is given "
                                       "(default: from -d: jpeg → deblock, rain → derain, camera → denoise-real, else denoise)."),
    channels: int = typer.Option(1, help="1 = evaluate on gray, 3 = on colour."),
    clean_dir: Optional[Path] = typer.Option(None, help="Real pairs: FOLDER holds degraded images, this folder the clean ones (same names)."),
    sigma: str = typer.Option("known", help="For σ-conditioned denoisers: 'known' (the test σ) or 'estimate' (blind)."),
    crop: int = typer.Option(0, help="Border pixels left out of PSNR/SSIM."),
    y_channel: bool = typer.Option(False, "--y", help="Score colour images on the Y channel."),
    tile: Optional[int] = TileOpt,
    overlap: int = OverlapOpt,
    use_tiles: bool = typer.Option(False, "--tiled/--whole", help="Score tiled inference (--tile, as the restore commands run it) instead of whole images (the papers' protocol)."),
    limit: Optional[int] = typer.Option(None, help="Only the first N images."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Write the table as Markdown."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write per-image results as JSON."),
    per_image: bool = typer.Option(False, "--per-image", help="Print every image, not just the means."),
    precision: str = typer.Option("fp32", "--precision", metavar="fp32|bf16|auto",
                                  help="Numerics of every torch system (DnCNN too): fp32 (default) scores the reference; "
                                       "auto or bf16 scores the fast path the restore commands take where bf16 is native."),
):
    """PSNR/SSIM of models over a folder, side by side, at deterministic degradations."""
    from restore.evaluate import EvalOptions, evaluate_models, render_markdown
    from restore.zoo.registry import task_for_degradation

    options = EvalOptions(degradation=degradation, channels=channels, crop=crop, y_channel=y_channel,
                          sigma_mode=sigma, tile=_tile_config(tile, overlap, not use_tiles), limit=limit,
                          clean_dir=clean_dir, task=task or task_for_degradation(degradation), precision=precision)
    _check_precision(precision, "torch")
    result = evaluate_models(folder, model or [None], options, progress=True)
    table = render_markdown(result, per_image=per_image)
    typer.echo(table)
    if markdown:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(table + "\n", encoding="utf-8")
    if json_out:
        import json

        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------- info / models

# `restore denoise -m NAME` is how users name a model elsewhere, so the commands that take it
# as their argument accept the same spelling too.
ModelFlagOpt = typer.Option(None, "--model", "-m", help="The same as MODEL (the spelling of `restore denoise -m`).")


def _one_model(argument: Optional[str], flag: Optional[str]) -> Optional[str]:
    if argument is not None and flag is not None and argument != flag:
        raise RestoreError(f"two models named ({argument!r} and -m {flag!r}): give one")
    return argument if argument is not None else flag


@app.command()
@user_errors
def info(
    model: Optional[str] = typer.Argument(None, help="Zoo model, preset, genotype JSON or run folder."),
    presets: bool = typer.Option(False, "--presets", help="List the architecture presets."),
    size: int = typer.Option(256, help="Image side used for the FLOPs count."),
    model_flag: Optional[str] = ModelFlagOpt,
):
    """Architecture, parameters and FLOPs of a model, preset or genotype file."""
    from restore.inspect import describe_model, list_preset_lines

    model = _one_model(model, model_flag)
    if presets or model is None:
        for line in list_preset_lines():
            typer.echo(line)
        return
    for line in describe_model(model, size=size):
        typer.echo(line)


@app.command()
@user_errors
def models():
    """List the shipped models (task, channels, range, quality)."""
    from restore.inspect import model_table

    typer.echo(model_table())


# ------------------------------------------------------------------------------- app


@app.command("app")
@user_errors
def app_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 = every interface)."),
    port: int = typer.Option(7860, "--port", help="Port to serve on."),
    share: bool = typer.Option(False, "--share/--no-share", help="Also open a temporary public gradio.live link."),
    backend: str = typer.Option("torch", "--backend", "-b", help="torch or onnx (ONNX Runtime)."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto."),
    tile: Optional[int] = TileOpt,
    overlap: int = OverlapOpt,
    max_pixels: int = typer.Option(4_000_000, "--max-pixels", help="Refuse uploads with more pixels than this (CPU time grows with it)."),
    max_upload_mb: float = typer.Option(25.0, "--max-upload-mb", help="Refuse uploads larger than this (MB)."),
    concurrency: int = typer.Option(1, "--concurrency", min=1, max=8, help="Requests restored at the same time (1–2 on CPU)."),
    queue_size: int = typer.Option(16, "--queue-size", min=1, help="Requests allowed to wait; more are turned away."),
    precision: str = PrecisionOpt,
):
    """Open the web demo: upload an image, restore it, compare before/after.

    Needs gradio, from the package's app extra. Example: restore app --port 7860
    """
    from restore.app import AppService, Limits, launch, require_gradio
    from restore.app.handlers import ZooCatalog

    if backend not in ("torch", "onnx"):
        raise RestoreError(f"unknown backend {backend!r} for the app (choose torch or onnx)")
    _check_precision(precision, backend)
    if max_pixels < 1 or max_upload_mb <= 0:
        raise RestoreError("--max-pixels and --max-upload-mb must be positive")
    require_gradio()
    limits = Limits(max_pixels=max_pixels, max_upload_bytes=int(max_upload_mb * 2**20))
    service = AppService(catalog=ZooCatalog(precision), backend=backend, device=device,
                         tile=_tile_config(tile, overlap, False), limits=limits)
    # `kill` (SIGTERM) stops the app as Ctrl+C does (gradio closes the server on KeyboardInterrupt),
    # so the exit handlers still run and remove its scratch folder
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # printed once the server listens, so a taken port gives the error line alone; gradio
    # itself prints the public link when sharing
    launch(service, host=host, port=port, share=share, concurrency=concurrency, queue_size=queue_size, quiet=not share,
           on_ready=lambda url: typer.echo(f"the restore app is running on {url} (Ctrl+C to stop)"))


# ------------------------------------------------------------------------------- export / bench


def _onnx_out_path(out: Optional[Path], name: str, fp16: bool) -> Path:
    """-o FILE.onnx is the file; any other -o is a folder; default: ./NAME.onnx."""
    filename = f"{name}{'-fp16' if fp16 else ''}.onnx"
    if out is None:
        return Path(filename)
    if out.suffix == ".onnx":
        return out
    if out.is_file():
        raise RestoreError(f"--out {out} is a file: give a .onnx file name or a folder")
    return out / filename


def _refuse_to_replace(paths: list[Path], overwrite: bool) -> None:
    for path in paths:
        if path.exists() and not overwrite:
            raise RestoreError(f"{path} already exists; add --overwrite to replace it")


def _export_engine(onnx_path: Path, size_multiple: int, tile: int, fp16: bool, dcn_plugin: str,
                   workspace_mb: int) -> None:
    from restore.export import tensorrt as trt_export

    trt = trt_export.require_trt_build(dcn_plugin)
    min_hw, opt_hw, max_hw = trt_export.profile_hw(tile, size_multiple)
    engine = trt_export.build_engine(onnx_path, onnx_path.with_suffix(".engine"), min_hw=min_hw, opt_hw=opt_hw,
                                     max_hw=max_hw, fp16=fp16, workspace_mb=workspace_mb,
                                     timing_cache=onnx_path.parent / "timing.cache", dcn_plugin=dcn_plugin)
    if not trt_export.has_deformconv(onnx_path):
        dcn_note = "no DeformConv layers"
    elif dcn_plugin == "builtin":
        dcn_note = "DeformConv via TensorRT's built-in ModulatedDeformConv2d plugin"
    else:
        dcn_note = ("DeformConv via the restore Triton plugin: load it with "
                    "restore.export.tensorrt.TensorRTBackend(ENGINE, dcn_plugin='restore')")
    typer.echo(f"wrote {engine} ({engine.stat().st_size / 1e6:.2f} MB, TensorRT {trt.__version__}, "
               f"H×W from {min_hw[0]} to {max_hw[0]}, optimised for {opt_hw[0]}, workspace {workspace_mb} MB, "
               f"{dcn_note})")


@app.command()
@user_errors
def export(
    model: Optional[str] = typer.Argument(None, help="Zoo model, preset (modnas-b), genotype JSON or training run folder (default: the default denoiser)."),
    to_onnx: bool = typer.Option(False, "--onnx", help="Write an ONNX graph, checked for parity in ONNX Runtime."),
    to_trt: bool = typer.Option(False, "--trt", help="Also build a TensorRT engine (needs TensorRT and an NVIDIA GPU)."),
    opset: int = typer.Option(19, "--opset", help="ONNX opset (19 or newer)."),
    dcn: str = typer.Option("deformconv", "--dcn", help="DCN layers as ONNX DeformConv, or 'decomposed' (GridSample→Mul→Conv) for runtimes without it."),
    fp16: bool = typer.Option(False, "--fp16", help="float16 weights and activations (input and output stay float32)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output .onnx file, or a folder (default: ./MODEL.onnx)."),
    tile: Optional[int] = typer.Option(None, "--tile", help="Tile size the model will run at (default: the model's, as `restore derain` etc. use it; metadata; with --trt the engine's optimal H×W — it accepts any H×W from one size multiple up to 1024)."),
    dcn_plugin: Optional[str] = typer.Option(
        None, "--dcn-plugin", metavar="builtin|restore",
        help="With --trt: how the engine runs DeformConv layers. 'builtin' (default): TensorRT's ModulatedDeformConv2d "
             "plugin, mapped by its ONNX parser (symmetric padding only). 'restore': the project's own plugin with a "
             "Triton kernel, for TensorRT builds without the built-in one or graphs it refuses (needs TensorRT >= 10.6 "
             "and triton; the engine then runs only in a Python process that registered the plugin). "
             "Not used with --dcn decomposed or nets without DCN."),
    workspace: Optional[int] = typer.Option(
        None, "--workspace", metavar="MB", min=1,
        help="With --trt: scratch GPU memory TensorRT's builder may give a layer, in MB (default 2048); lower it on "
             "small GPUs, raise it if the build reports tactics skipped for lack of memory."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
    model_flag: Optional[str] = ModelFlagOpt,
):
    """Export a model for deployment: ONNX (with a parity check against PyTorch) and/or TensorRT.

    Examples: restore export modnas-b --onnx -o exports/ ·
    restore export hinas-genotype.json --trt --tile 128 --dcn-plugin restore --workspace 1024 -o exports/
    """
    from restore.export.onnx import (FP16_ATOL, check_export_args, check_parity, example_image, export_onnx, has_dcn,
                                     model_metadata, module_in_channels, parity_inputs, resolve_model_source)

    model = _one_model(model, model_flag)
    if not (to_onnx or to_trt):
        raise RestoreError("say what to export: --onnx and/or --trt")
    check_export_args(opset, dcn)
    if not to_trt and (dcn_plugin is not None or workspace is not None):
        raise RestoreError("--dcn-plugin and --workspace are TensorRT build options: add --trt")
    if to_trt:
        from restore.export.tensorrt import check_dcn_plugin, require_trt_build

        dcn_plugin = check_dcn_plugin(dcn_plugin or "builtin")
        workspace = 2048 if workspace is None else workspace
        if not to_onnx:  # before the slow export, since nothing else was asked for
            require_trt_build(dcn_plugin if dcn == "deformconv" else "builtin")
    module, entry, note = resolve_model_source(model)
    if note:
        typer.echo(note)
    tile = entry.tile if tile is None else tile
    path = _onnx_out_path(out, entry.name, fp16)
    _refuse_to_replace([path, path.with_suffix(".engine")] if to_trt else [path], overwrite)
    in_channels, multiple = module_in_channels(module), int(getattr(module, "size_multiple", 1))
    export_onnx(module, path, in_channels=in_channels, opset=opset, dcn=dcn, fp16=fp16,
                metadata=model_metadata(module, entry=entry, tile=tile))
    dcn_used = dcn if has_dcn(module) else "none (no DCN layers)"
    typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, opset {opset}, dcn {dcn_used}, "
               f"{'fp16' if fp16 else 'fp32'}, dynamic N×{in_channels}×H×W, H and W multiples of {multiple})")
    inputs = parity_inputs(in_channels, entry.noise_map, multiple, example_image())
    report = check_parity(module, path, inputs, atol=FP16_ATOL if fp16 else 1e-4)
    typer.echo(f"parity with PyTorch (ONNX Runtime on {', '.join(report.providers)}, atol {report.atol:g}):")
    typer.echo(report.table())
    report.raise_on_failure()
    if to_trt:
        _export_engine(path, multiple, tile, fp16, dcn_plugin, workspace)


_BENCH_BACKENDS = {"torch": "torch", "onnx": "onnx", "onnxruntime": "onnx", "tensorrt": "tensorrt", "trt": "tensorrt"}


@app.command()
@user_errors
def bench(
    model: Optional[str] = typer.Argument(None, help="Zoo model, preset, genotype JSON or run folder (default: the default denoiser)."),
    backend: str = typer.Option("torch", "--backend", "-b", help="torch, onnx (ONNX Runtime) or tensorrt."),
    size: int = typer.Option(256, "--size", help="Image side in pixels (rounded up to the model's size multiple)."),
    tile: Optional[int] = typer.Option(None, "--tile", help="Tile size of the tiled run (default: the model's, as the restore commands use it)."),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Timed runs after 2 warm-up runs; the median is reported."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch and ONNX Runtime."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the numbers to this JSON file."),
    dcn_plugin: Optional[str] = RuntimeDcnPluginOpt,
    precision: str = PrecisionOpt,
    model_flag: Optional[str] = ModelFlagOpt,
):
    """Speed of a model on one backend: parameters, FLOPs per megapixel, whole-image and tiled latency.

    Example: restore bench modnas-b --backend onnx --size 512 --threads 4
    """
    import json
    from dataclasses import asdict

    import torch

    from restore.export.onnx import module_in_channels, resolve_model_source
    from restore.restorer import make_backend
    from restore.runtime.profile import measure_latency, profile_module
    from restore.runtime.tiling import TileConfig, count_tiles, restore_tensor

    model = _one_model(model, model_flag)
    kind = _BENCH_BACKENDS.get(backend.lower())
    if kind is None:
        raise RestoreError(f"unknown backend {backend!r} (choose torch, onnx or tensorrt)")
    if size < 1 or (tile is not None and tile < 1):
        raise RestoreError("--size and --tile must be positive")
    _check_trt_backend(kind, dcn_plugin)  # before loading and profiling the model
    _check_precision(precision, kind)
    if threads:
        torch.set_num_threads(threads)
    module, entry, note = resolve_model_source(model)
    if note:
        typer.echo(note)
    tile = entry.tile if tile is None else tile
    in_channels, multiple = module_in_channels(module), int(getattr(module, "size_multiple", 1))
    side = -(-size // multiple) * multiple
    cost = profile_module(module, in_channels, side)  # before the backend takes the module
    runner = make_backend(kind, module, device=device, entry=entry, tile=tile, dcn_plugin=dcn_plugin,
                          precision=precision)
    x = torch.rand(1, in_channels, side, side, generator=torch.Generator().manual_seed(0))
    if entry.noise_map:
        x[:, -1] = 25 / 255
    config = TileConfig(tile=tile, overlap=min(16, tile // 4))
    whole = measure_latency(runner, x.to(runner.device), repeats=repeats)
    tiled = measure_latency(lambda t: restore_tensor(runner, t, config=config, size_multiple=multiple), x,
                            repeats=repeats)
    tiles = count_tiles(side, side, config, multiple)
    typer.echo(f"{entry.name} · {runner.describe()}")
    typer.echo(f"params {cost.params / 1e6:.3f} M · {cost.flops_per_mp / 1e9:.2f} GFLOPs per megapixel")
    for label, stats in ((f"whole {side}×{side}", whole), (f"tiled ({tiles} tiles of {tile})", tiled)):
        typer.echo(f"{label:<24} median {stats.median_ms:9.2f} ms · min {stats.min_ms:9.2f} ms · "
                   f"{stats.megapixels_per_s:7.2f} MP/s")
    if json_out:
        result = dict(model=entry.name, backend=kind, runs_on=runner.describe(), params=cost.params,
                      flops_per_megapixel=cost.flops_per_mp, size=side, tile=tile, tiles=tiles,
                      threads=torch.get_num_threads(), precision=getattr(runner, "precision", "fp32"),
                      whole=asdict(whole), tiled=asdict(tiled))
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def _warn_in_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    # A warning is for the user of the command: its text, not the source line that raised it.
    print(f"warning: {message}", file=file or sys.stderr)


def main() -> None:
    from restore.runtime.allocator import keep_freed_memory

    warnings.showwarning = _warn_in_one_line
    keep_freed_memory()  # reuse freed activation memory instead of re-faulting it (RESULTS §3.3)
    app()


if __name__ == "__main__":
    main()
