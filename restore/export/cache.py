"""A private per-user cache for exported ONNX files and TensorRT engines.

Engines are loaded from here without the user naming them, so the folder must be one no
other local user can write to: `$XDG_CACHE_HOME/restore/<name>` (default `~/.cache`),
created with mode 0700 and refused if it is owned by someone else or writable by others.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from restore.errors import RestoreError


def private_cache_dir(name: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "restore" / name
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = base.stat()
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise RestoreError(f"cache folder {base} belongs to another user; refusing to load engines from it")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise RestoreError(f"cache folder {base} is writable by other users; refusing to load engines from it (chmod 700 it)")
    return base
