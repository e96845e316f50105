"""Atomic, durable file replacement: the one writer behind every file the package produces
(restored images, checkpoints, weights, genotypes, rewritten logs, ONNX models, TensorRT
engines).

`atomic_write` writes a temp file in the target's folder, fsyncs it, renames it over the
target and fsyncs the folder: a reader, or a run resumed after a kill at any instant,
sees either the complete old file or the complete new one. A kill leaves at most a temp
file (``.NAME.*.tmp``) that nothing reads; the next successful write of NAME removes it.
"""

from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path

from restore import faults

TEMP_SUFFIX = ".tmp"  # temp files are ".<name>.<random><TEMP_SUFFIX>" beside the target


def atomic_write(path: str | os.PathLike, data: bytes | bytearray | memoryview | str) -> Path:
    """Replace `path` with `data` (str is UTF-8 encoded) atomically and durably."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    view = memoryview(data.encode("utf-8") if isinstance(data, str) else data).cast("B")
    mode = _mode_for(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            half = len(view) // 2
            fh.write(view[:half])
            if os.environ.get(faults.PAUSE_ENV):  # let a crash test see the half-written temp file
                fh.flush()
                faults.pause(f"write-mid/{path.name}")
            fh.write(view[half:])
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # mkstemp creates 0600
        faults.pause(f"write-end/{path.name}")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    _remove_stale_temps(path)
    return path


def _mode_for(path: Path) -> int:
    """The permissions of the file being replaced, else those of a new file (0666 − umask)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        return 0o666 & ~current_umask()


def current_umask() -> int:
    """The process umask (for files created 0600 by a temp-file API, then renamed into place)."""
    try:  # Linux exposes it without the race of setting and restoring it
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (not supported on every platform/filesystem)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stale_temps(path: Path) -> None:
    """Temp files of earlier writes of `path` that a kill interrupted (one writer per file)."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*{TEMP_SUFFIX}"):
        try:
            stale.unlink()
        except OSError:
            pass
