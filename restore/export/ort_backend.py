"""ONNX Runtime backend: the `Backend` protocol over an `onnxruntime.InferenceSession`.

Batches are handed to ONNX Runtime as CPU numpy arrays (ORT copies them to the GPU
itself when a GPU provider runs), so ``device`` is always "cpu" for the tiled runtime.
Providers: CPU by default; with ``device`` "cuda"/"cuda:N"/"auto", the TensorRT and CUDA
execution providers go first when the installed onnxruntime(-gpu) offers them.
`describe()` reports what the session actually uses, not what is merely installed.

ONNX ``DeformConv`` needs onnxruntime ≥ 1.25: graphs containing it are refused on older
versions with a hint to re-export with ``--dcn decomposed``; `for_model` picks that
mode by itself.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from restore.errors import RestoreError

if TYPE_CHECKING:  # pragma: no cover
    from restore.zoo.registry import ModelEntry

__all__ = ["MIN_ORT_DEFORMCONV", "OnnxRuntimeBackend", "default_dcn_mode", "ort_version", "select_providers"]

MIN_ORT_DEFORMCONV = (1, 25)
_NP_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def ort_version() -> tuple[int, int]:
    """(major, minor) of the installed onnxruntime (read at call time, so tests can patch it)."""
    import onnxruntime

    found = re.match(r"(\d+)\.(\d+)", onnxruntime.__version__)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def default_dcn_mode() -> str:
    return "deformconv" if ort_version() >= MIN_ORT_DEFORMCONV else "decomposed"


def _check_deformconv_support(op_types: set[str]) -> None:
    if "DeformConv" in op_types and ort_version() < MIN_ORT_DEFORMCONV:
        import onnxruntime

        need = ".".join(map(str, MIN_ORT_DEFORMCONV))
        raise RestoreError(
            f"this ONNX graph uses DeformConv, which onnxruntime {onnxruntime.__version__} cannot run "
            f"(needs >= {need}): upgrade onnxruntime or re-export with --dcn decomposed")


def select_providers(device: str) -> list:
    """Execution providers for a --device value, best first, CPU always last."""
    import onnxruntime

    device = device.strip().lower()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device not in ("auto", "cuda") and not re.fullmatch(r"cuda:\d+", device):
        raise RestoreError(f"unknown device {device!r}; choose cpu, cuda, cuda:N or auto")
    available = set(onnxruntime.get_available_providers())
    if "CUDAExecutionProvider" not in available:
        if device == "auto":
            return ["CPUExecutionProvider"]
        raise RestoreError(f"--device {device} needs onnxruntime-gpu with CUDA (pip install 'restore[gpu]'); "
                           f"this onnxruntime offers only {', '.join(sorted(available))}")
    device_id = int(device.partition(":")[2] or 0)
    providers: list = []
    if "TensorrtExecutionProvider" in available:
        from restore.export.cache import private_cache_dir

        cache = private_cache_dir("ort-tensorrt")
        providers.append(("TensorrtExecutionProvider", {
            "device_id": device_id, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}))
    providers.append(("CUDAExecutionProvider", {"device_id": device_id}))
    providers.append("CPUExecutionProvider")
    return providers


def _read_model_bytes(onnx_path_or_bytes) -> bytes:
    if isinstance(onnx_path_or_bytes, (bytes, bytearray)):
        return bytes(onnx_path_or_bytes)
    path = Path(onnx_path_or_bytes)
    if not path.is_file():
        raise RestoreError(f"ONNX file {path} does not exist")
    return path.read_bytes()


class OnnxRuntimeBackend:
    """``backend(batch) -> batch`` through ONNX Runtime (see the module docstring)."""

    name = "onnxruntime"

    def __init__(self, onnx_path_or_bytes: str | Path | bytes, device: str = "auto", *, threads: int | None = None):
        import onnx
        import onnxruntime

        data = _read_model_bytes(onnx_path_or_bytes)
        try:
            model = onnx.load_from_string(data)
        except Exception as exc:  # protobuf decode errors have many types
            raise RestoreError(f"not a readable ONNX model: {type(exc).__name__}") from None
        _check_deformconv_support({n.op_type for n in model.graph.node})
        self.metadata = {p.key: p.value for p in model.metadata_props}
        self.device = "cpu"  # where the tiled runtime should put batches (numpy in, numpy out)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3  # errors only: no provider-fallback chatter
        try:
            self.session = onnxruntime.InferenceSession(data, sess_options=options,
                                                        providers=select_providers(device))
        except RestoreError:
            raise
        except Exception as exc:
            raise RestoreError(f"ONNX Runtime cannot load the model: {str(exc).splitlines()[0]}") from None
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.input_name, self.output_name = inp.name, out.name
        self.input_dtype = _NP_DTYPES.get(inp.type, np.float32)
        self.input_shape = list(inp.shape)
        self.size_multiple = int(self.metadata.get("size_multiple", 1))

    @property
    def providers(self) -> list[str]:
        """Providers the session actually runs on (ORT drops unusable ones)."""
        return list(self.session.get_providers())

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.detach().to("cpu", torch.float32).contiguous().numpy().astype(self.input_dtype, copy=False)
        y = self.session.run([self.output_name], {self.input_name: x})[0]
        return torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))

    def describe(self) -> str:
        import onnxruntime

        precision = self.metadata.get("precision", "fp32")
        dcn = self.metadata.get("dcn", "")
        extra = f", dcn {dcn}" if dcn and dcn != "none" else ""
        return f"onnxruntime {onnxruntime.__version__} on {', '.join(self.providers)} ({precision}{extra})"

    def check_channels(self, expected: int, what: str) -> None:
        """Refuse a user-supplied graph whose input channels do not match the model."""
        got = self.input_shape[1] if len(self.input_shape) == 4 else None
        if isinstance(got, int) and got != expected:
            raise RestoreError(f"the ONNX graph takes {got} input channels but {what} needs {expected}")

    @classmethod
    def for_model(cls, module: nn.Module, *, entry: "ModelEntry", device: str = "auto",
                  onnx_path: str | Path | None = None, dcn: str | None = None, fp16: bool = False,
                  threads: int | None = None, tile: int | None = 64) -> "OnnxRuntimeBackend":
        """Load the user's `onnx_path`, or export `module` to a temporary ONNX first (DCN mode:
        DeformConv when this onnxruntime runs it, else the decomposed form)."""
        from restore.export.onnx import export_onnx_model, model_metadata, module_in_channels

        in_channels = entry.channels + int(entry.noise_map)
        if onnx_path is not None:
            backend = cls(onnx_path, device, threads=threads)
            backend.check_channels(in_channels, f"model {entry.name!r}")
            return backend
        model = export_onnx_model(module, in_channels=module_in_channels(module, in_channels), dcn=dcn or default_dcn_mode(), fp16=fp16,
                                  metadata=model_metadata(module, entry=entry, tile=tile))
        return cls(model.SerializeToString(), device, threads=threads)
