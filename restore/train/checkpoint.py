"""Crash-safe checkpoints that hold only tensors and JSON.

A checkpoint is one safetensors file: every tensor of the (nested) training state under a
flat key, and the rest of the structure as JSON in the safetensors metadata, with
``{"__tensor__": key}`` placeholders. No object deserialisation runs, so a checkpoint from an
untrusted source cannot run code.

Writes are atomic (`restore.atomic.atomic_write`: temp file in the same folder →
fsync → rename → fsync of the folder), so a kill at any moment, including while the bytes
are being written, leaves either the old or the new checkpoint, never half of one. A kill
can leave the temp file (``.NAME.*.tmp``) behind; nothing reads it, and the next
successful save removes it. Crash tests stop a save at a chosen point with the
RESTORE_TEST_PAUSE hook (`restore.faults`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as serialize

from restore.errors import RestoreError
from restore.atomic import atomic_write

_TENSOR = "__tensor__"
_TUPLE = "__tuple__"


def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = prefix or "root"
        tensors[key] = obj.detach().cpu().contiguous()
        return {_TENSOR: key}
    if isinstance(obj, dict):
        if not all(isinstance(k, (str, int)) for k in obj):
            raise TypeError(f"checkpoint dict keys must be str or int at {prefix!r}")
        # int keys (optimizer state) survive JSON as "i:<n>"
        return {(f"i:{k}" if isinstance(k, int) else f"s:{k}"): _flatten(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return {_TUPLE: [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint (at {prefix!r})")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return tensors[obj[_TENSOR]]
        if _TUPLE in obj:
            return tuple(_unflatten(v, tensors) for v in obj[_TUPLE])
        return {(int(k[2:]) if k.startswith("i:") else k[2:]): _unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Write a flat dict of tensors as safetensors, atomically (see the module docstring).

    The file is serialised in memory first (one extra copy of the tensors, transiently),
    so the atomic writer can be stopped at any byte by the crash tests."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return atomic_write(path, serialize(tensors, metadata=metadata))


def save_state(path: str | Path, state: dict) -> Path:
    """Write a nested training state atomically as a single safetensors file."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "", tensors)
    return save_tensors(path, tensors, metadata={"restore-state": json.dumps(skeleton)})


def load_state(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise RestoreError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise RestoreError(f"cannot read checkpoint {path}: {exc}") from None
    if "restore-state" not in meta:
        raise RestoreError(f"{path} is not a restore checkpoint")
    return _unflatten(json.loads(meta["restore-state"]), tensors)


def rng_state() -> dict:
    import random

    import numpy as np

    py = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": json.dumps(np.random.get_state()[1].tolist()),
        "numpy_pos": int(np.random.get_state()[2]),
        "python": json.dumps([py[0], list(py[1]), py[2]]),
    }


def set_rng_state(state: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    keys = np.array(json.loads(state["numpy"]), dtype=np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
    version, internal, gauss = json.loads(state["python"])
    random.setstate((version, tuple(internal), gauss))
