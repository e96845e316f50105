"""ONNX export of derived networks, and parity checks against PyTorch in ONNX Runtime.

`export_onnx` runs the dynamo exporter (``torch.onnx.export(..., dynamo=True)``) with the
project's DCN translations (`restore.export.onnx_ops`) and a dynamic batch, height and
width. The exported graph has one float32 input ``input`` (N×C_in×H×W, values in [0, 1],
H and W multiples of the model's ``size_multiple``) and one float32 output ``output``.

Decisions worth knowing:

* Opset ≥ 19. ONNX Runtime rejects these models' opset-17 graphs, and DeformConv is 19.
* The example input has batch 2: torch.export specialises a size-1 dimension, which would
  freeze the batch at 1.
* ``fp16=True`` exports a ``.half()`` copy of the network (the exporter then emits
  float16 weights and activations natively; converting a float32 graph afterwards
  produced graphs that fail the checker). Input and output stay float32: a Cast at each
  end keeps the interface of every backend identical. Parity is then checked with a
  looser tolerance (`FP16_ATOL`).
* The metadata (``model.metadata_props``) says what the graph is: model name, task,
  genotype JSON, input range, tile size, channels, σ map, DCN mode, precision, version.
* Every export passes ``onnx.checker.check_model(full_check=True)`` and is written
  atomically (temporary file + rename), so a crash never leaves half a model behind.
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from restore.atomic import atomic_write
from restore.errors import RestoreError
from restore.export.onnx_ops import DCN_MODES, custom_translation_table

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from restore.zoo.registry import ModelEntry

__all__ = [
    "FP16_ATOL",
    "INPUT_NAME",
    "MIN_OPSET",
    "OUTPUT_NAME",
    "ParityCase",
    "ParityReport",
    "check_export_args",
    "check_parity",
    "example_image",
    "export_onnx",
    "export_onnx_model",
    "has_dcn",
    "model_metadata",
    "module_in_channels",
    "parity_inputs",
    "read_metadata",
    "resolve_model_source",
    "save_onnx",
]

MIN_OPSET = 19
INPUT_NAME, OUTPUT_NAME = "input", "output"
MAX_SIDE = 8192  # largest H or W the exported graph promises to accept
MAX_BATCH = 1024
FP16_ATOL = 1e-2  # float16 keeps ~3 significant digits; outputs are in [0, 1]


# ----------------------------------------------------------------------------- module facts


def module_in_channels(module: nn.Module, default: int | None = None) -> int:
    """Input channels of a derived network (image channels + 1 with a σ map)."""
    if isinstance(getattr(module, "in_channels", None), int):
        return module.in_channels
    g = getattr(module, "genotype", None)
    if g is not None:
        return g.in_channels + int(g.noise_map)
    if default is not None:
        return default
    raise RestoreError(f"cannot tell the input channels of a {type(module).__name__}; pass in_channels")


def has_dcn(module: nn.Module) -> bool:
    from restore.models.dcn import DeformConv2d

    return any(isinstance(m, DeformConv2d) for m in module.modules())


def _size_multiple(module: nn.Module) -> int:
    return int(getattr(module, "size_multiple", 1))


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _restore_version() -> str:
    from restore import __version__

    return __version__


# ----------------------------------------------------------------------------- metadata


def model_metadata(module: nn.Module, *, entry: "ModelEntry | None" = None, name: str | None = None,
                   task: str | None = None, tile: int | None = 64) -> dict[str, str]:
    """The descriptive metadata of an export (what `export_onnx` cannot know itself)."""
    from restore.models.genotype import to_dict

    g = getattr(module, "genotype", None)
    meta = {
        "model": name or (entry.name if entry else "") or (g.name if g is not None else "") or "unnamed",
        "task": task or (entry.task if entry else "denoise"),
        "input_range": "[0,1]",
        "tile_size": "" if tile is None else str(tile),
    }
    if g is not None:
        meta["genotype"] = json.dumps(to_dict(g), separators=(",", ":"))
        meta["channels"] = str(g.in_channels)
        meta["noise_map"] = str(bool(g.noise_map)).lower()
    if entry is not None:
        meta["channels"] = str(entry.channels)
        meta["noise_map"] = str(bool(entry.noise_map)).lower()
    return meta


def read_metadata(model: "onnx.ModelProto | str | Path | bytes") -> dict[str, str]:
    import onnx

    if isinstance(model, (str, Path)):
        model = onnx.load(str(model), load_external_data=False)
    elif isinstance(model, bytes):
        model = onnx.load_from_string(model)
    return {p.key: p.value for p in model.metadata_props}


def _set_metadata(model: "onnx.ModelProto", values: dict[str, str]) -> None:
    merged = {p.key: p.value for p in model.metadata_props}
    merged.update({k: str(v) for k, v in values.items()})
    del model.metadata_props[:]
    for key, value in merged.items():
        model.metadata_props.add(key=key, value=value)


# ----------------------------------------------------------------------------- export


def check_export_args(opset: int, dcn: str) -> None:
    if opset < MIN_OPSET:
        raise RestoreError(
            f"opset {opset} is not supported: use --opset {MIN_OPSET} or newer (ONNX Runtime rejects "
            f"these models' opset-17 graphs, and ONNX DeformConv needs opset 19)")
    if dcn not in DCN_MODES:
        raise RestoreError(f"unknown DCN export mode {dcn!r}; use one of {', '.join(DCN_MODES)}")


def _dynamic_shapes(size_multiple: int) -> tuple[dict, ...]:
    """Batch, H and W dynamic; H and W multiples of `size_multiple`."""
    Dim = torch.export.Dim
    batch = Dim("batch", min=1, max=MAX_BATCH)
    if size_multiple > 1:
        top = MAX_SIDE // size_multiple
        h, w = size_multiple * Dim("h", min=1, max=top), size_multiple * Dim("w", min=1, max=top)
    else:  # min 2: torch.export specialises sizes 0 and 1 anyway
        h, w = Dim("h", min=2, max=MAX_SIDE), Dim("w", min=2, max=MAX_SIDE)
    return ({0: batch, 2: h, 3: w},)


@contextmanager
def _quiet_exporter():
    """The exporter logs a warning per missing torchvision op and emits deprecation noise."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _float32_io(model: "onnx.ModelProto") -> None:
    """Wrap a float16 graph so that its input and output are float32 (one Cast each)."""
    from onnx import TensorProto, helper

    graph = model.graph
    inp, out = graph.input[0], graph.output[0]
    inner_in, inner_out = f"{inp.name}_fp16", f"{out.name}_fp16"
    for node in graph.node:
        node.input[:] = [inner_in if n == inp.name else inner_out if n == out.name else n for n in node.input]
        node.output[:] = [inner_out if n == out.name else n for n in node.output]
    stale = [v for v in graph.value_info if v.name in (inp.name, out.name)]
    for v in stale:
        graph.value_info.remove(v)
    graph.node.insert(0, helper.make_node("Cast", [inp.name], [inner_in], to=TensorProto.FLOAT16, name="input_to_fp16"))
    graph.node.append(helper.make_node("Cast", [inner_out], [out.name], to=TensorProto.FLOAT, name="output_to_fp32"))
    inp.type.tensor_type.elem_type = TensorProto.FLOAT
    out.type.tensor_type.elem_type = TensorProto.FLOAT


def export_onnx_model(module: nn.Module, *, in_channels: int, opset: int = MIN_OPSET, dcn: str = "deformconv",
                      fp16: bool = False, metadata: dict | None = None, example_size: int = 64) -> "onnx.ModelProto":
    """Export to an in-memory, checked `onnx.ModelProto` (see the module docstring)."""
    import onnx

    check_export_args(opset, dcn)
    multiple = _size_multiple(module)
    # A copy: eval mode, the CPU and .half() must not change the caller's module.
    net = copy.deepcopy(module).eval().cpu()
    dtype = torch.float16 if fp16 else torch.float32
    net = net.to(dtype)
    side = _round_up(max(example_size, 2 * multiple, 8), multiple)
    example = torch.rand(2, in_channels, side, side, generator=torch.Generator().manual_seed(0)).to(dtype)
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                net, (example,), None, dynamo=True, opset_version=opset, verbose=False,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                custom_translation_table=custom_translation_table(dcn, opset),
                dynamic_shapes=_dynamic_shapes(multiple))
    except RestoreError:
        raise
    except Exception as exc:  # exporter failures are long; keep the first line, chain the rest
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RestoreError(f"ONNX export failed ({type(exc).__name__}): {first}") from exc
    model = program.model_proto
    if fp16:
        _float32_io(model)
    uses_dcn = has_dcn(module)
    _set_metadata(model, {
        **(metadata or {}),
        "input_range": "[0,1]",
        "in_channels": str(in_channels),
        "size_multiple": str(multiple),
        "dcn": dcn if uses_dcn else "none",
        "precision": "fp16" if fp16 else "fp32",
        "opset": str(opset),
        "restore_version": _restore_version(),
    })
    model.producer_name = "restore"
    model.producer_version = _restore_version()
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise RestoreError(f"the exported ONNX graph fails the checker: {str(exc).splitlines()[0]}") from exc
    return model


def save_onnx(model: "onnx.ModelProto", path: str | Path) -> Path:
    """Write atomically (`restore.atomic`): a reader never sees half a model."""
    try:
        return atomic_write(path, model.SerializeToString())
    except OSError as exc:
        raise RestoreError(f"cannot write {path}: {exc.strerror or exc}") from None


def export_onnx(module: nn.Module, path: str | Path, *, in_channels: int, opset: int = MIN_OPSET,
                dcn: str = "deformconv", fp16: bool = False, metadata: dict | None = None,
                example_size: int = 64) -> Path:
    """Export `module` to `path` (dynamic N, H, W; checked; atomic). Returns the path."""
    model = export_onnx_model(module, in_channels=in_channels, opset=opset, dcn=dcn, fp16=fp16,
                              metadata=metadata, example_size=example_size)
    return save_onnx(model, path)


# ----------------------------------------------------------------------------- parity


@dataclass
class ParityCase:
    shape: tuple[int, ...]
    max_abs_err: float
    passed: bool

    @property
    def label(self) -> str:
        return "×".join(map(str, self.shape))


@dataclass
class ParityReport:
    """Max |torch − ONNX Runtime| per input."""

    cases: list[ParityCase] = field(default_factory=list)
    providers: list[str] = field(default_factory=list)
    atol: float = 1e-4

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.cases)

    @property
    def max_abs_err(self) -> float:
        return max((c.max_abs_err for c in self.cases), default=0.0)

    def table(self) -> str:
        rows = [f"  {'input':<18} {'max |Δ|':>10}"]
        rows += [f"  {c.label:<18} {c.max_abs_err:>10.2e}  {'ok' if c.passed else 'FAIL'}" for c in self.cases]
        return "\n".join(rows)

    def raise_on_failure(self) -> None:
        bad = [c for c in self.cases if not c.passed]
        if bad:
            worst = max(bad, key=lambda c: c.max_abs_err)
            raise RestoreError(
                f"ONNX parity check failed: max |Δ| {worst.max_abs_err:.3g} > {self.atol:g} on input "
                f"{worst.label} ({len(bad)} of {len(self.cases)} inputs fail)")


def check_parity(module: nn.Module, onnx_path: str | Path | bytes, inputs: list[torch.Tensor], *,
                 atol: float = 1e-4) -> ParityReport:
    """Run each input through `module` (torch, float32) and the ONNX graph (ORT, CPU)."""
    from restore.export.ort_backend import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(onnx_path, device="cpu")
    param = next(module.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    net = module.eval()
    report = ParityReport(providers=backend.providers, atol=atol)
    for x in inputs:
        with torch.no_grad():
            want = net(x.to(device, torch.float32)).to("cpu", torch.float32)
        got = backend(x)
        err = float((got - want).abs().max()) if got.shape == want.shape else float("inf")
        if not np.isfinite(err):
            err = float("inf")
        report.cases.append(ParityCase(tuple(x.shape), err, err <= atol))
    return report


def _fit_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """H×W(×C) float image → H×W×channels (gray ↔ colour by mean / repetition)."""
    img = image[..., None] if image.ndim == 2 else image
    if img.shape[2] in (2, 4):  # drop alpha
        img = img[..., :-1]
    if img.shape[2] == channels:
        return img
    if channels == 1:
        return img.mean(axis=2, keepdims=True)
    return np.repeat(img[..., :1], channels, axis=2)


def _crop(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """A centred h×w crop; reflect-pads first when the image is smaller."""
    ph, pw = max(0, h - image.shape[0]), max(0, w - image.shape[1])
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="reflect" if min(image.shape[:2]) > 1 else "edge")
    y0, x0 = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
    return image[y0 : y0 + h, x0 : x0 + w]


def parity_inputs(in_channels: int, noise_map: bool, size_multiple: int, real_image: np.ndarray | None = None,
                  *, seed: int = 0) -> list[torch.Tensor]:
    """Random inputs (2×64×64 — batch 2 tests the dynamic batch — and 96×128) plus, when
    `real_image` is given, a noisy non-square crop of it (σ = 25). Sizes are rounded up
    to `size_multiple`; with a σ map the last channel holds σ/255."""
    rng = np.random.default_rng(seed)
    image_channels = in_channels - int(noise_map)
    m = size_multiple
    batches = [rng.random((2, image_channels, _round_up(64, m), _round_up(64, m)), dtype=np.float32),
               rng.random((1, image_channels, _round_up(96, m), _round_up(128, m)), dtype=np.float32)]
    sigmas: list[float] = [float(rng.uniform(0, 75)), float(rng.uniform(0, 75))]
    if real_image is not None:
        img = _crop(_fit_channels(np.asarray(real_image, dtype=np.float32), image_channels),
                    _round_up(88, m), _round_up(120, m))
        noisy = img + rng.normal(0, 25 / 255, img.shape).astype(np.float32)
        batches.append(noisy.transpose(2, 0, 1)[None].copy())
        sigmas.append(25.0)
    out = []
    for x, sigma in zip(batches, sigmas):
        t = torch.from_numpy(np.ascontiguousarray(x))
        if noise_map:
            t = torch.cat([t, torch.full_like(t[:, :1], sigma / 255.0)], dim=1)
        out.append(t)
    return out


def example_image(seed: int = 0) -> np.ndarray:
    """A real-looking H×W×1 test image: a packaged example if there is one, else a
    synthetic one (smooth shading, hard edges, fine texture) — what parity checks need."""
    from importlib import resources

    try:
        folder = resources.files("restore") / "examples"
        pngs = sorted(p for p in folder.iterdir() if p.name.endswith(".png")) if folder.is_dir() else []
    except (FileNotFoundError, ModuleNotFoundError):
        pngs = []
    if pngs:
        from restore.io import read_image

        return read_image(str(pngs[0])).pixels
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:160, 0:200].astype(np.float32)
    img = 0.3 + 0.3 * np.sin(xx / 23.0) * np.cos(yy / 31.0)  # smooth shading
    img += 0.25 * ((xx - 100) ** 2 + (yy - 80) ** 2 < 45**2)  # a disc with a hard edge
    img[40:70, 20:90] = 0.85  # a bright rectangle
    img += 0.05 * np.sin(xx * 1.3 + yy * 0.7)  # fine texture
    img += rng.normal(0, 0.01, img.shape)
    return np.clip(img, 0, 1).astype(np.float32)[..., None]


# ----------------------------------------------------------------------------- model sources


def resolve_model_source(source: str | None, *, task: str = "denoise", channels: int = 1):
    """(module, entry, note) for a zoo name, a training run folder, a preset name, a
    genotype JSON, or None (the task's default model). `note` says when the weights are
    random (presets and bare genotypes), else it is ""."""
    from restore.models.build import build, list_presets, resolve_genotype
    from restore.zoo.registry import ModelEntry, default_entry, list_models, load_network

    def random_init(text: str, why: str):
        g = resolve_genotype(text)
        with torch.random.fork_rng(devices=[]):  # reproducible weights, global RNG untouched
            torch.manual_seed(0)
            module = build(g).eval()
        name = g.name or Path(text).stem
        entry = ModelEntry(name=name, task=task, channels=g.in_channels, noise_map=g.noise_map, space=g.space)
        return module, entry, f"note: {why}: random-init weights (fine for deployment tests, not for images)"

    if source is None:
        try:
            entry = default_entry(task, channels)
        except RestoreError:
            # Nothing shipped yet: deployment tooling still works, on the reference preset.
            return random_init("modnas-b", "no shipped default model yet, using preset modnas-b")
        return load_network(entry), entry, ""
    path = Path(source)
    if path.is_dir():
        from restore.restorer import run_network

        return (*run_network(path), "")
    if source.endswith(".json") or path.is_file():
        return random_init(source, f"genotype {path.name}")
    if source in list_models():
        from restore.zoo.registry import get_entry

        entry = get_entry(source)
        return load_network(entry), entry, ""
    if source in list_presets():
        return random_init(source, f"preset {source}")
    known = ", ".join(list_models() + list_presets()) or "none"
    raise RestoreError(f"unknown model {source!r}: not a zoo model, preset, genotype JSON or run folder (known: {known})")

