"""Typed configs: dataclasses loaded from JSON with unknown keys and wrong types refused.

Every run directory holds its fully resolved config as JSON, so a run can be resumed or
reproduced from that file alone.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

from restore.errors import RestoreError

T = TypeVar("T")


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Accept JSON values for simple annotated types (tuples arrive as lists)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if value is None and (annotation is type(None) or type(None) in args):
        return None
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, value, arg)
            except RestoreError:
                continue
        raise RestoreError(f"config key {name!r}: {value!r} does not fit {annotation}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise RestoreError(f"config key {name!r} must be a list, got {value!r}")
        inner = args[0] if args else Any
        return tuple(_coerce(name, v, inner) for v in value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise RestoreError(f"config key {name!r} must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RestoreError(f"config key {name!r} must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RestoreError(f"config key {name!r} must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise RestoreError(f"config key {name!r} must be a string, got {value!r}")
        return value
    return value


def config_from_dict(cls: type[T], data: dict, *, where: str = "config") -> T:
    if not isinstance(data, dict):
        raise RestoreError(f"{where} must be a JSON object")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise RestoreError(f"unknown key(s) in {where}: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    values = {k: _coerce(k, v, hints[k]) for k, v in data.items()}
    return cls(**values)


def read_json_object(path: str | Path) -> dict:
    """A config file's JSON object, with one-line errors for a missing file or bad JSON."""
    path = Path(path)
    if not path.is_file():
        raise RestoreError(f"config file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RestoreError(f"config {path} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise RestoreError(f"config {path} must be a JSON object")
    return data


def load_config(cls: type[T], path: str | Path, **overrides) -> T:
    path = Path(path)
    data = read_json_object(path)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return config_from_dict(cls, data, where=str(path))


def config_to_dict(cfg: Any) -> dict:
    assert is_dataclass(cfg)
    return asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config_to_dict(cfg), indent=2) + "\n", encoding="utf-8")
    return path
