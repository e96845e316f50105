"""Folder datasets: random degraded patches for training, real pairs, and evaluation sets.

Images are decoded with Pillow here (not `restore.io`) so that datasets have no
dependency on the user-facing I/O layer. Decoded images are cached in their native
8/16-bit form (4× smaller than float32) and converted to float only per crop.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from restore.data.degradations import (
    AWGN,
    Degradation,
    LevelDegradation,
    degradation_from_spec,
    degrade_for_eval,
)
from restore.data.symmetry import check_transforms
from restore.errors import RestoreError

__all__ = [
    "IMAGE_EXTENSIONS",
    "RAIN100H_BACKGROUND_IDS",
    "EvalSet",
    "PairedFolder",
    "PatchDataset",
    "exclude_rain_backgrounds",
    "list_images",
    "rain100l_pairing",
    "readable_images",
    "skipped_report",
]

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm"}
)

# BSD200 (BSDS300 train) ids that are Rain100H clean backgrounds (shared/data/SOURCES.md):
# leave them out of de-raining training when testing on Rain100H/Rain100L.
RAIN100H_BACKGROUND_IDS = frozenset(
    """
    2092 20008 22013 22090 22093 23025 23080 23084 24004 24063 25098 26031 27059 28075 28096
    100075 105019 183055 183087 187003 187029 187039 187071 187083 188005 188063 188091 189003
    189011 196015 198004 198023 198054 202012 207056 209070 216041 216053 216066 225017 227040
    227046 231015 232038 236017 238011 239007 239096 242078 245051 246016 246053 247085 249061
    249087 253036 254033 254054 260081 268002 271008 271031 274007 277095 285036 286092 292066
    """.split()
)

_LUMA_BT601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)


# --------------------------------------------------------------------------- files
def _natural_key(path: Path) -> list:
    """Sort 'norain-2' before 'norain-10'."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def list_images(folder: str | os.PathLike, exclude: Iterable[str] = ()) -> list[Path]:
    """Image files directly in `folder`, naturally sorted; `exclude` holds stems or names."""
    folder = Path(folder)
    if folder.is_file():
        raise RestoreError(f"{folder} is a file: give the folder that holds the images")
    if not folder.is_dir():
        raise RestoreError(f"image folder not found: {folder}")
    skip = set(exclude)
    paths = [
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and p.stem not in skip and p.name not in skip
    ]
    if not paths:
        raise RestoreError(f"no images in {folder}")
    return sorted(paths, key=_natural_key)


def exclude_rain_backgrounds(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Drop BSD images that are Rain100H clean backgrounds (train/test overlap)."""
    return [Path(p) for p in paths if Path(p).stem not in RAIN100H_BACKGROUND_IDS]


def rain100l_pairing(name: str) -> str:
    """Rain100L naming: `rain-001.png` pairs with `norain-001.png`."""
    if not name.startswith("rain-"):
        raise RestoreError(f"Rain100L pairing expects names like rain-001.png, got {name}")
    return "norain-" + name[len("rain-") :]


def _name_list(paths: Sequence[Path], limit: int = 10) -> str:
    names = ", ".join(p.name for p in paths[:limit])
    return names + (f", … (+{len(paths) - limit} more)" if len(paths) > limit else "")


def skipped_report(unreadable: Sequence[Path] = (), too_small: Sequence[Path] = (), patch: int | None = None) -> list[str]:
    """One line per kind of skipped training image, for the run's log, e.g.
    "skipped 2 unreadable image(s): a.png, b.png" (empty when nothing was skipped)."""
    lines = []
    if unreadable:
        lines.append(f"skipped {len(unreadable)} unreadable image(s): {_name_list(list(unreadable))}")
    if too_small:
        size = f" than the {patch}×{patch} patch" if patch else " than the patch"
        lines.append(f"skipped {len(too_small)} image(s) smaller{size}: {_name_list(list(too_small))}")
    return lines


def readable_images(paths: Sequence[str | os.PathLike], limit: int | None = None,
                    warn: bool = True) -> tuple[list[Path], list[Path]]:
    """(readable, unreadable) among `paths`, in order, by decoding them; stops once `limit`
    readable images are found. Warns once per unreadable image unless `warn=False` (as
    PatchDataset does)."""
    good: list[Path] = []
    bad: list[Path] = []
    for p in map(Path, paths):
        if limit is not None and len(good) >= limit:
            break
        try:
            _decode(p)
        except RestoreError as e:
            if warn:
                warnings.warn(f"skipping unreadable image: {e}", stacklevel=2)
            bad.append(p)
            continue
        good.append(p)
    return good, bad


def _describe(paths: Sequence[Path]) -> str:
    parents = {p.parent for p in paths}
    return str(parents.pop()) if len(parents) == 1 else f"{len(paths)} files"


# --------------------------------------------------------------------------- decoding
def _decode(path: Path) -> np.ndarray:
    """Decode to H×W×C (C = 1 or 3) uint8 / uint16 / float32; EXIF orientation applied,
    alpha dropped (training targets have no transparency)."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
                arr = np.clip(np.asarray(im, dtype=np.int64), 0, 65535).astype(np.uint16)
            elif im.mode == "F":
                arr = np.asarray(im, dtype=np.float32)
            elif im.mode in ("1", "L", "LA", "La"):
                arr = np.asarray(im.convert("L"))
            elif "A" in im.mode or im.mode == "P":  # via RGBA so palette transparency is handled
                arr = np.asarray(im.convert("RGBA").convert("RGB"))
            else:
                arr = np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise RestoreError(f"cannot read image {path}: {e}") from None
    return arr[..., None] if arr.ndim == 2 else arr


def _to_float(arr: np.ndarray, channels: int) -> np.ndarray:
    """Native array → float32 [0, 1] with `channels` channels (grey replicated to RGB,
    RGB to ITU-R BT.601 luma, kept in float, not re-quantised)."""
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(arr.dtype, 1.0)
    x = arr.astype(np.float32) / np.float32(scale)
    if x.shape[2] == channels:
        return x
    if channels == 3:
        return np.repeat(x, 3, axis=2)
    return (x @ _LUMA_BT601)[..., None]


def _load_clean(path: str | os.PathLike, channels: int) -> np.ndarray:
    """Read an image as H×W×C float32 in [0, 1] with C = `channels` (1 or 3)."""
    return _to_float(_decode(Path(path)), channels)


def _probe_size(path: Path) -> tuple[int, int]:
    """(H, W) from the header only, after EXIF rotation."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            # PNG getexif() decodes the whole file (eXIf may follow the pixels): only look
            # when the header already carried EXIF
            has_exif = im.format != "PNG" or "exif" in im.info
            if has_exif and im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # rotated by 90°
                h, w = w, h
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise RestoreError(f"cannot read image {path}: {e}") from None
    return h, w


def _check_channels(channels: int) -> None:
    if channels not in (1, 3):
        raise RestoreError(f"channels must be 1 or 3, got {channels}")


# --------------------------------------------------------------------------- helpers
def _dihedral(x: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 rotations/flips of an H×W×C array (k in 0..7)."""
    x = np.rot90(x, k % 4, axes=(0, 1))
    return x[:, ::-1] if k >= 4 else x


def _to_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32))


def _item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    # a generator per (seed, epoch, index): identical in any DataLoader worker, any order
    return np.random.default_rng([seed, epoch, index])


def _as_degradation(degradation: Degradation | str) -> Degradation:
    return degradation_from_spec(degradation) if isinstance(degradation, str) else degradation


# --------------------------------------------------------------------------- datasets
class PatchDataset(Dataset):
    """Random degraded/clean patch pairs from clean images, for training.

    Item i draws an image and a crop with a generator seeded by (seed, epoch, i), applies
    one of 8 rotations/flips, then the degradation. Returns `(degraded, clean)` float32
    C×H×W tensors; with `noise_map=True` (AWGN only) the degraded input gets one more
    channel holding σ/255. `length` defaults to the number of usable images.

    Unreadable images and images smaller than the patch are skipped, with a warning each
    unless `warn=False` (a trainer that logs `skipped_report()` names them once itself);
    `unreadable` and `too_small` list them, `skipped` counts both, and `skipped_report()`
    gives the lines a run logs about them.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike] | str | os.PathLike,
        *,
        patch: int = 64,
        channels: int = 1,
        degradation: Degradation | str,
        length: int | None = None,
        augment: bool = True,
        noise_map: bool = False,
        seed: int = 0,
        cache: bool = True,
        warn: bool = True,
    ) -> None:
        _check_channels(channels)
        if patch < 1:
            raise RestoreError(f"patch must be positive, got {patch}")
        if isinstance(paths, (str, os.PathLike)):
            paths = list_images(paths)
        paths = [Path(p) for p in paths]
        if not paths:
            raise RestoreError("no training images given")
        self.degradation = _as_degradation(degradation)
        if noise_map and not isinstance(self.degradation, AWGN):
            raise RestoreError(f"noise_map needs an AWGN degradation, got {self.degradation.setting()}")
        self.patch, self.channels, self.augment = patch, channels, augment
        self.noise_map, self.seed, self.cache = noise_map, seed, cache
        self.epoch = 0
        self.unreadable: list[Path] = []
        self.too_small: list[Path] = []
        self.paths: list[Path] = []
        self._images: list[np.ndarray] = []
        for p in paths:
            try:
                arr = _decode(p) if cache else None
                h, w = arr.shape[:2] if cache else _probe_size(p)
            except RestoreError as e:
                if warn:
                    warnings.warn(f"skipping unreadable image: {e}", stacklevel=2)
                self.unreadable.append(p)
                continue
            if h < patch or w < patch:
                if warn:
                    warnings.warn(f"skipping {p.name}: {w}x{h} is smaller than patch {patch}", stacklevel=2)
                self.too_small.append(p)
                continue
            self.paths.append(p)
            if cache:
                self._images.append(arr)
        if not self.paths:
            if len(self.unreadable) == len(paths):
                raise RestoreError(f"no readable images in {_describe(paths)}")
            raise RestoreError(f"patch {patch} is larger than every image in {_describe(paths)}")
        self.length = len(self.paths) if length is None else int(length)
        if self.length < 1:
            raise RestoreError(f"length must be positive, got {length}")

    @property
    def skipped(self) -> int:
        """How many images were skipped (unreadable or smaller than the patch)."""
        return len(self.unreadable) + len(self.too_small)

    def skipped_report(self) -> list[str]:
        return skipped_report(self.unreadable, self.too_small, self.patch)

    def set_epoch(self, epoch: int) -> None:
        """Vary the crops: call at the start of each epoch (works with any worker count)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        rng = _item_rng(self.seed, self.epoch, index)
        i = int(rng.integers(len(self.paths)))
        arr = self._images[i] if self.cache else _decode(self.paths[i])
        h, w = arr.shape[:2]
        if h < self.patch or w < self.patch:  # cache=False and the file changed since
            raise RestoreError(f"{self.paths[i].name} is smaller than patch {self.patch}")
        top, left = int(rng.integers(h - self.patch + 1)), int(rng.integers(w - self.patch + 1))
        clean = _to_float(arr[top : top + self.patch, left : left + self.patch], self.channels)
        if self.augment:  # all 8: the patch is transformed before it is degraded
            clean = np.ascontiguousarray(_dihedral(clean, int(rng.integers(8))))
        if isinstance(self.degradation, LevelDegradation):
            level = self.degradation.sample_level(rng)
            degraded = self.degradation.apply(clean, level, rng)
        else:
            level, degraded = None, self.degradation(clean, rng)
        if self.noise_map:
            sigma_map = np.full((*clean.shape[:2], 1), level / 255.0, dtype=np.float32)
            degraded = np.concatenate([degraded, sigma_map], axis=2)
        return _to_tensor(degraded), _to_tensor(clean)


class PairedFolder(Dataset):
    """Real degraded/clean pairs from two folders (e.g. Rain100H `rain/` and `norain/`).

    `pairing` maps a degraded file name to its clean file name: "same-name" or a callable
    such as `rain100l_pairing`. A clean file with the same stem but another extension is
    accepted. Full images when `patch` is None, else aligned random crops (seeded by
    (seed, epoch, index) like PatchDataset). Returns `(degraded, clean)` C×H×W tensors.

    `augment` lists the flips/rotations to draw from (`restore.data.symmetry`): only those
    that leave the pairs' degradation alike, e.g. `UPRIGHT_TRANSFORMS` for rain, since a
    pair is transformed after it was degraded. Default: none.
    """

    def __init__(
        self,
        degraded_dir: str | os.PathLike,
        clean_dir: str | os.PathLike,
        *,
        pairing: str | Callable[[str], str] = "same-name",
        patch: int | None = None,
        channels: int = 3,
        augment: Sequence[int] = (),
        seed: int = 0,
    ) -> None:
        _check_channels(channels)
        try:
            augment = check_transforms(augment)
        except (TypeError, ValueError):
            raise RestoreError(
                f"augment takes the flips/rotations that keep the pairs' degradation alike "
                f"(e.g. UPRIGHT_TRANSFORMS for rain), got {augment!r}"
            ) from None
        if pairing == "same-name":
            partner_name: Callable[[str], str] = lambda name: name  # noqa: E731
        elif callable(pairing):
            partner_name = pairing
        else:
            raise RestoreError(f"unknown pairing {pairing!r}: use 'same-name' or a function")
        clean_dir = Path(clean_dir)
        clean = list_images(clean_dir)
        by_name = {p.name: p for p in clean}
        by_stem = {p.stem: p for p in clean}
        self.pairs: list[tuple[Path, Path]] = []
        for dp in list_images(degraded_dir):
            want = partner_name(dp.name)
            cp = by_name.get(want) or by_stem.get(Path(want).stem)
            if cp is None:
                raise RestoreError(f"no clean partner for {dp.name} in {clean_dir} (expected {want})")
            size_d, size_c = _probe_size(dp), _probe_size(cp)
            if size_d != size_c:
                raise RestoreError(
                    f"size mismatch: {dp.name} is {size_d[1]}x{size_d[0]}, "
                    f"{cp.name} is {size_c[1]}x{size_c[0]}"
                )
            if patch is not None and min(size_d) < patch:
                raise RestoreError(f"patch {patch} is larger than {dp.name} ({size_d[1]}x{size_d[0]})")
            self.pairs.append((dp, cp))
        self.patch, self.channels, self.augment, self.seed = patch, channels, augment, seed
        self.epoch = 0

    @property
    def names(self) -> list[str]:
        return [dp.stem for dp, _ in self.pairs]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        dp, cp = self.pairs[index]
        degraded, clean = _load_clean(dp, self.channels), _load_clean(cp, self.channels)
        rng = _item_rng(self.seed, self.epoch, index)
        if self.patch is not None:
            h, w = clean.shape[:2]
            top, left = int(rng.integers(h - self.patch + 1)), int(rng.integers(w - self.patch + 1))
            window = np.s_[top : top + self.patch, left : left + self.patch]
            degraded, clean = degraded[window], clean[window]
        if self.augment:
            k = self.augment[int(rng.integers(len(self.augment)))]
            degraded, clean = _dihedral(degraded, k), _dihedral(clean, k)
        return _to_tensor(degraded), _to_tensor(clean)


class EvalSet:
    """A test folder (or a list of image files) with deterministic degradation: yields
    `(name, degraded, clean)`, numpy H×W×C float32, degraded by `degrade_for_eval`
    (benchmark AWGN protocol for a fixed σ, `eval_rng(name, setting)` otherwise)."""

    def __init__(
        self,
        folder: str | os.PathLike | Sequence[str | os.PathLike],
        degradation: Degradation | str,
        channels: int,
        *,
        exclude: Iterable[str] = (),
    ) -> None:
        _check_channels(channels)
        if isinstance(folder, (str, os.PathLike)):
            self.paths = list_images(folder, exclude)
        else:
            skip = set(exclude)
            self.paths = [Path(p) for p in folder if Path(p).stem not in skip and Path(p).name not in skip]
            if not self.paths:
                raise RestoreError("no evaluation images given")
        self.degradation = _as_degradation(degradation)
        self.channels = channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[str, np.ndarray, np.ndarray]:
        path = self.paths[index]
        clean = _load_clean(path, self.channels)
        return path.stem, degrade_for_eval(clean, path.stem, self.degradation), clean

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        return (self[i] for i in range(len(self)))
