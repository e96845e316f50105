"""Image files in and out: the only place where files become arrays and arrays become files.

Arrays at this boundary are float32 in [0, 1], H×W×C with C = 1 (gray) or 3 (colour); alpha
travels separately as H×W and is never processed, only passed through. Inside the package
images are N×C×H×W tensors; `to_tensor`/`from_tensor` are the only conversion points.

Reading (`read_image`) goes through Pillow, except 16-bit colour PNGs (RGB, RGBA, gray +
alpha), which Pillow silently reduces to 8 bits: those are decoded here with zlib and the
PNG filters in numpy so no precision is lost. 16-bit *colour TIFFs* are still reduced to 8
bits by Pillow (`bit_depth` then reports 8).

Writing (`write_image`) is atomic (temp file in the target directory, fsync, `os.replace`)
and never leaves partial output. What each format can hold decides what is written:

| format | 16-bit                                   | alpha |
|--------|------------------------------------------|-------|
| PNG    | yes (gray via Pillow, colour/alpha here) | yes   |
| TIFF   | gray without alpha only; else 8-bit      | yes   |
| WebP   | no (8-bit); lossless when quality=100    | yes   |
| JPEG   | no (8-bit)                               | dropped |
| BMP    | no (8-bit)                               | dropped |
"""

from __future__ import annotations

import glob
import io
import os
import struct
import threading
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile

from restore.atomic import atomic_write
from restore.errors import RestoreError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "LoadedImage",
    "expand_inputs",
    "from_tensor",
    "output_path_for",
    "read_image",
    "save_like",
    "to_tensor",
    "write_image",
]

DEFAULT_MAX_PIXELS = 100_000_000
# Suffixes picked up from directories and globs (readable); GIF is read (first frame) only.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
_WRITE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}
_ALPHA_FORMATS = {"PNG", "TIFF", "WEBP"}
_ORIENTATION_TAG = 0x0112
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Pillow's bomb limit and lenient-loading flag are module globals. We touch them only under
# this lock: to learn the size of an image Pillow refused outright (our `max_pixels` decides),
# and to load strictly when someone else enabled LOAD_TRUNCATED_IMAGES.
_PIL_GLOBALS_LOCK = threading.Lock()


@dataclass
class LoadedImage:
    """A decoded image: colour pixels plus untouched alpha and what is needed to save alike."""

    pixels: np.ndarray  # float32 H×W×C in [0, 1], C = 1 or 3
    alpha: np.ndarray | None  # float32 H×W in [0, 1]
    bit_depth: int  # 8 or 16
    source_mode: str  # Pillow mode of the file ("RGB" also for 16-bit colour PNGs)
    path: Path | None = None
    icc_profile: bytes | None = None

    @property
    def is_gray(self) -> bool:
        return self.pixels.shape[2] == 1

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    @property
    def width(self) -> int:
        return self.pixels.shape[1]


# ----------------------------------------------------------------------------- reading


def read_image(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Read an image file; every failure becomes one `RestoreError` line naming the file.

    `max_pixels` (None = unlimited) is checked against the *declared* size before any pixel
    is decoded, so a decompression bomb costs nothing.
    """
    path = Path(path)
    if max_pixels is not None and (not isinstance(max_pixels, int) or max_pixels <= 0):
        raise RestoreError(f"max_pixels must be a positive integer or None, got {max_pixels!r}")
    _check_readable(path)
    try:
        with open(path, "rb") as f:
            head = f.read(33)
            ihdr = _parse_ihdr(head) if head.startswith(_PNG_SIGNATURE) else None
            if ihdr is not None and ihdr[2] == 16 and ihdr[3] in _PNG16_CHANNELS:
                f.seek(0)
                return _read_png16(path, f.read(), max_pixels)
    except PermissionError:
        raise RestoreError(f"cannot read '{path}': permission denied") from None
    except OSError as e:
        raise RestoreError(f"cannot read '{path}': {_one_line(e)}") from None
    return _read_with_pillow(path, max_pixels)


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise RestoreError(f"cannot read '{path}': no such file")
    if path.is_dir():
        raise RestoreError(f"cannot read '{path}': is a directory, not an image file")
    if not path.is_file():  # a FIFO or device would block or stream forever
        raise RestoreError(f"cannot read '{path}': not a regular file")
    if path.stat().st_size == 0:
        raise RestoreError(f"cannot read '{path}': the file is empty")


def _check_size(path: Path, width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise RestoreError(
            f"'{path}' is {width}×{height} = {_megapixels(width * height)}, above the limit of "
            f"{_megapixels(max_pixels)} (set --max-pixels)"
        )


def _megapixels(n: int) -> str:
    return f"{round(n / 1e6, 1):g} MP" if n >= 100_000 else f"{n} pixels"


def _one_line(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return " ".join(text.split())


def _read_with_pillow(path: Path, max_pixels: int | None) -> LoadedImage:
    # Pillow warns about damaged files ("Corrupt EXIF data", "Truncated File Read"…) on
    # stderr; the file either reads or fails with our one line, so those go unprinted.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _read_with_pillow_quietly(path, max_pixels)


def _read_with_pillow_quietly(path: Path, max_pixels: int | None) -> LoadedImage:
    im = _open_lazily(path)
    try:
        _check_size(path, *im.size, max_pixels)
        try:
            _load_strictly(im)
        except Image.DecompressionBombError as e:  # some decoders (GIF frames…) check again
            reason = _one_line(e)
            raise RestoreError(f"cannot read '{path}': refused as a possible decompression bomb ({reason})") from None
        except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, zlib.error…
            raise RestoreError(f"cannot read '{path}': truncated or corrupt image data ({_one_line(e)})") from None
        try:
            colour, alpha, depth = _pillow_arrays(im)
        except RestoreError:
            raise
        except Exception as e:
            raise RestoreError(f"cannot read '{path}': cannot convert mode {im.mode} ({_one_line(e)})") from None
        icc = im.info.get("icc_profile") or None
        orientation = _exif_orientation(im)
        mode = im.mode
    finally:
        im.close()
    return LoadedImage(
        pixels=_apply_orientation(colour, orientation),
        alpha=None if alpha is None else _apply_orientation(alpha, orientation),
        bit_depth=depth,
        source_mode=mode,
        path=path,
        icc_profile=_compatible_icc(icc, colour.shape[2]),
    )


def _open_lazily(path: Path) -> Image.Image:
    """`Image.open` reads only the header; Pillow's own bomb limit is replaced by ours."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                return Image.open(path)
            except Image.DecompressionBombError:
                with _PIL_GLOBALS_LOCK:  # reopen only to learn the declared size
                    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                    try:
                        return Image.open(path)
                    finally:
                        Image.MAX_IMAGE_PIXELS = saved
    except PermissionError:
        raise RestoreError(f"cannot read '{path}': permission denied") from None
    except Image.UnidentifiedImageError:
        raise RestoreError(f"cannot read '{path}': not an image file (or an unsupported format)") from None
    except Exception as e:  # SyntaxError/ValueError/OSError from a broken header or metadata chunk
        raise RestoreError(f"cannot read '{path}': corrupt image header ({_one_line(e)})") from None


def _load_strictly(im: Image.Image) -> None:
    """Decode all pixels, failing on truncated data even if someone enabled lenient loading."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # `max_pixels` decides
        if not ImageFile.LOAD_TRUNCATED_IMAGES:
            im.load()
            return
        with _PIL_GLOBALS_LOCK:
            ImageFile.LOAD_TRUNCATED_IMAGES = False
            try:
                im.load()
            finally:
                ImageFile.LOAD_TRUNCATED_IMAGES = True


def _pillow_arrays(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Pixels (H×W×C float32), alpha (H×W or None) and bit depth of a loaded Pillow image."""
    mode = im.mode
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or im.has_transparency_data
        arr = np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
        colour = arr[..., :3]
        if (colour[..., 0] == colour[..., 1]).all() and (colour[..., 1] == colour[..., 2]).all():
            colour = colour[..., :1]  # a gray palette stays gray
        return _unit(colour, 255), _unit(arr[..., 3], 255) if has_alpha else None, 8
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im)
        if mode == "I" and (arr.min() < 0 or arr.max() > 65535):  # a true 32-bit image
            arr = np.clip(arr, 0, None).astype(np.float64)
            colour = (arr / max(arr.max(), 1))[..., None].astype(np.float32)
        else:
            colour = _unit(arr[..., None], 65535)
        return colour, _key_alpha(arr, im.info.get("transparency")), 16
    if mode == "F":
        arr = np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        peak = float(arr.max()) if arr.size else 0.0
        if peak > 1.0:  # not normalised: the usual integer scale it fits, else its own peak
            arr = arr / next((top for top in (255.0, 65535.0) if peak <= top), peak)
        return np.clip(arr, 0, 1)[..., None].astype(np.float32), None, 16
    if mode in ("1", "L"):
        arr = np.asarray(im.convert("L"))
        return _unit(arr[..., None], 255), _key_alpha(arr, im.info.get("transparency")), 8
    if mode in ("LA", "La"):
        arr = np.asarray(im.convert("LA"))
        return _unit(arr[..., :1], 255), _unit(arr[..., 1], 255), 8
    if mode == "RGB":
        arr = np.asarray(im)
        return _unit(arr, 255), _key_alpha(arr, im.info.get("transparency")), 8
    if mode in ("RGBA", "RGBa"):
        arr = np.asarray(im.convert("RGBA"))
        return _unit(arr[..., :3], 255), _unit(arr[..., 3], 255), 8
    # CMYK, YCbCr, LAB, HSV, RGBX…: Pillow knows how to reach RGB
    return _unit(np.asarray(im.convert("RGB")), 255), None, 8


def _unit(arr: np.ndarray, peak: int) -> np.ndarray:
    out = arr.astype(np.float32)
    out /= np.float32(peak)  # in place: one float32 image, not two
    return out


def _key_alpha(arr: np.ndarray, key) -> np.ndarray | None:
    """PNG tRNS colour key for gray/RGB images: exactly the key colour is transparent."""
    if key is None or isinstance(key, bytes):
        return None
    key_arr = np.asarray(key).reshape(-1)
    values = arr if arr.ndim == 3 else arr[..., None]
    if key_arr.size != values.shape[2]:
        return None
    return (values != key_arr).any(axis=2).astype(np.float32)


def _exif_orientation(im: Image.Image) -> int:
    try:
        return _valid_orientation(im.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # malformed EXIF must not make an image unreadable
        return 1


def _valid_orientation(value) -> int:
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Same result as `ImageOps.exif_transpose`, in numpy so 16-bit data can use it too."""
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(ops[orientation](arr))


def _compatible_icc(icc: bytes | None, channels: int) -> bytes | None:
    """Keep a profile only if its colour space matches the pixels (a CMYK profile on the RGB
    pixels we produce from CMYK would mis-colour them in every viewer)."""
    if not icc or len(icc) < 20:
        return None
    space = icc[16:20]
    return icc if space == (b"GRAY" if channels == 1 else b"RGB ") else None


# ------------------------------------------------------------------- 16-bit colour PNG

_PNG16_CHANNELS = {2: 3, 4: 2, 6: 4}  # colour type → samples per pixel (RGB, LA, RGBA)
_PNG_COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # samples per pixel → colour type
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


class _CorruptPNG(Exception):
    pass


def _parse_ihdr(head: bytes) -> tuple[int, int, int, int, int] | None:
    """(width, height, bit depth, colour type, interlace) from the first 33 bytes of a PNG."""
    if len(head) < 33 or head[12:16] != b"IHDR":
        return None
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", head[16:29])
    return width, height, depth, colour, interlace


def _png_chunks(data: bytes):
    """Yield (type, payload) up to IEND, checking CRCs; missing bytes mean a truncated file."""
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        if end > len(data):
            break
        payload = data[pos + 8 : end - 4]
        if zlib.crc32(kind + payload) != struct.unpack(">I", data[end - 4 : end])[0]:
            raise _CorruptPNG(f"bad CRC in {kind.decode('latin-1')} chunk")
        yield kind, payload
        if kind == b"IEND":
            return
        pos = end
    raise _CorruptPNG("the file is truncated")


def _read_png16(path: Path, data: bytes, max_pixels: int | None) -> LoadedImage:
    width, height, _, colour_type, interlace = _parse_ihdr(data)
    _check_size(path, width, height, max_pixels)
    try:
        if width == 0 or height == 0 or interlace > 1:
            raise _CorruptPNG("invalid IHDR")
        samples, alpha_key, icc, orientation = _decode_png16(data, width, height, colour_type, interlace)
    except (_CorruptPNG, zlib.error, ValueError) as e:
        raise RestoreError(f"cannot read '{path}': truncated or corrupt PNG ({_one_line(e)})") from None
    channels = samples.shape[2]
    has_alpha = channels in (2, 4)
    n_colour = channels - 1 if has_alpha else channels
    colour = _unit(samples[..., :n_colour], 65535)
    alpha = _unit(samples[..., -1], 65535) if has_alpha else _key_alpha(samples, alpha_key)
    return LoadedImage(
        pixels=_apply_orientation(colour, orientation),
        alpha=None if alpha is None else _apply_orientation(alpha, orientation),
        bit_depth=16,
        source_mode={2: "RGB", 4: "LA", 6: "RGBA"}[colour_type],
        path=path,
        icc_profile=_compatible_icc(icc, n_colour),
    )


def _decode_png16(data: bytes, width: int, height: int, colour_type: int, interlace: int):
    channels = _PNG16_CHANNELS[colour_type]
    bpp = 2 * channels
    idat, icc, exif, key = [], None, None, None
    for kind, payload in _png_chunks(data):
        if kind == b"IDAT":
            idat.append(payload)
        elif kind == b"iCCP":
            icc = _inflate_icc(payload)
        elif kind == b"eXIf":
            exif = payload
        elif kind == b"tRNS" and colour_type == 2 and len(payload) == 6:
            key = struct.unpack(">HHH", payload)
    passes = _png_passes(width, height, interlace)
    expected = sum(ph * (pw * bpp + 1) for *_, pw, ph in passes)
    inflater = zlib.decompressobj()
    raw = inflater.decompress(b"".join(idat), expected)  # capped: a lying stream cannot balloon
    if len(raw) < expected:
        raise _CorruptPNG("image data ends early")
    image = np.zeros((height, width, bpp), np.uint8)
    pos = 0
    for x0, y0, dx, dy, pw, ph in passes:
        size = ph * (pw * bpp + 1)
        image[y0::dy, x0::dx] = _unfilter(raw[pos : pos + size], pw, ph, bpp)
        pos += size
    samples = image.reshape(height, width * bpp).view(">u2").reshape(height, width, channels)
    orientation = 1
    if exif:
        parsed = Image.Exif()
        try:
            parsed.load(exif)
            orientation = _valid_orientation(parsed.get(_ORIENTATION_TAG, 1))
        except Exception:  # malformed EXIF must not make an image unreadable
            orientation = 1
    return samples, key, icc, orientation


def _inflate_icc(payload: bytes) -> bytes | None:
    """iCCP = name, NUL, method byte, zlib data. A broken profile is dropped, as Pillow does,
    rather than making the image unreadable; the size cap stops a zlib bomb."""
    try:
        inflater = zlib.decompressobj()
        profile = inflater.decompress(payload[payload.index(b"\0") + 2 :], 1 << 24)
    except (ValueError, zlib.error):
        return None
    return profile if inflater.eof else None


def _png_passes(width: int, height: int, interlace: int):
    """(x0, y0, dx, dy, pass width, pass height) of the non-empty (sub-)images."""
    if not interlace:
        return [(0, 0, 1, 1, width, height)]
    passes = []
    for x0, y0, dx, dy in _ADAM7:
        pw, ph = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if pw > 0 and ph > 0:
            passes.append((x0, y0, dx, dy, pw, ph))
    return passes


def _unfilter(buf: bytes, width: int, height: int, bpp: int) -> np.ndarray:
    """Undo PNG scanline filters → (height, width, bpp) bytes."""
    rows = np.frombuffer(buf, np.uint8).reshape(height, width * bpp + 1)
    kinds, filtered = rows[:, 0], rows[:, 1:].reshape(height, width, bpp)
    if kinds.max(initial=0) > 4:
        raise _CorruptPNG("unknown scanline filter")
    if (kinds >= 3).any():
        return _unfilter_wavefront(kinds, filtered)
    out = np.empty((height, width, bpp), np.uint8)
    previous = np.zeros((width, bpp), np.uint8)
    for r in range(height):  # None / Sub / Up only: each row is one vectorised step
        line = filtered[r]
        if kinds[r] == 1:
            line = np.cumsum(line, axis=0, dtype=np.uint8)  # uint8 wraps mod 256 as PNG wants
        elif kinds[r] == 2:
            line = line + previous
        out[r] = line
        previous = out[r]
    return out


def _unfilter_wavefront(kinds: np.ndarray, filtered: np.ndarray, band: int = 1024) -> np.ndarray:
    """Average and Paeth need the *decoded* left neighbour, so rows cannot be vectorised.
    Pixels with equal r + x are independent, though: decode anti-diagonal by anti-diagonal
    (H + W numpy steps instead of H × W Python steps). Diagonals are stored skewed — pixel
    (r, x) at [r + x + 2, r + 1] — so each one is a contiguous slice; bands of rows bound
    the memory of that layout."""
    height, width, bpp = filtered.shape
    masks = [(kinds == kind).astype(np.int16)[:, None] for kind in (1, 2, 3, 4)]
    out = np.empty((height, width, bpp), np.uint8)
    previous = np.zeros((width, bpp), np.int16)  # PNG's row above the image is zeros
    for top in range(0, height, band):
        rows = min(band, height - top)
        r = np.arange(rows)[:, None]
        skew = (r + np.arange(width)[None, :] + 2, r + 1)
        source = np.zeros((rows + width + 1, rows + 1, bpp), np.uint8)
        source[skew] = filtered[top : top + rows]
        # [:, 0] is the row above the band and [d, d] the column left of the image (zeros)
        decoded = np.zeros((rows + width + 1, rows + 1, bpp), np.int16)
        decoded[1 : width + 1, 0] = previous
        sub, up, avg, paeth = (m[top : top + rows] for m in masks)
        for d in range(2, rows + width + 1):
            lo, hi = max(0, d - 1 - width), min(rows, d - 1)
            a, b, c = decoded[d - 1, lo + 1 : hi + 1], decoded[d - 1, lo:hi], decoded[d - 2, lo:hi]
            pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
            nearest = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
            value = sub[lo:hi] * a + up[lo:hi] * b + avg[lo:hi] * ((a + b) >> 1) + paeth[lo:hi] * nearest
            value += source[d, lo + 1 : hi + 1]
            decoded[d, lo + 1 : hi + 1] = value & 0xFF
        out[top : top + rows] = decoded[skew]
        previous = out[top + rows - 1].astype(np.int16)
    return out


def _encode_png(samples: np.ndarray, icc_profile: bytes | None = None) -> bytes:
    """Encode H×W×C uint16 samples (C = 1, 2, 3, 4) as a 16-bit PNG, which Pillow cannot.

    Each row takes the None/Sub/Up filter with the smallest sum of |signed bytes| (the PNG
    spec's heuristic); Average/Paeth are skipped so our own reader stays on its fast path.
    """
    height, width, channels = samples.shape
    bpp = 2 * channels
    raw = samples.astype(">u2").view(np.uint8).reshape(height, width * bpp).astype(np.int16)
    left = np.zeros_like(raw)
    left[:, bpp:] = raw[:, :-bpp]
    up = np.zeros_like(raw)
    up[1:] = raw[:-1]
    candidates = np.stack([raw, raw - left, raw - up]) & 0xFF
    cost = np.minimum(candidates, 256 - candidates).sum(axis=2)
    best = cost.argmin(axis=0)
    rows = np.empty((height, width * bpp + 1), np.uint8)
    rows[:, 0] = best
    rows[:, 1:] = candidates[best, np.arange(height)]
    ihdr = struct.pack(">IIBBBBB", width, height, 16, _PNG_COLOUR_TYPE[channels], 0, 0, 0)
    parts = [_PNG_SIGNATURE, _png_chunk(b"IHDR", ihdr)]
    if icc_profile:
        parts.append(_png_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc_profile)))
    compressed = zlib.compress(rows.tobytes(), 6)
    step = 1 << 20
    parts += [_png_chunk(b"IDAT", compressed[i : i + step]) for i in range(0, max(len(compressed), 1), step)]
    parts.append(_png_chunk(b"IEND", b""))
    return b"".join(parts)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


# ----------------------------------------------------------------------------- writing


def write_image(
    path: str | Path,
    pixels: np.ndarray,
    *,
    alpha: np.ndarray | None = None,
    bit_depth: int = 8,
    icc_profile: bytes | None = None,
    overwrite: bool = False,
    quality: int = 95,
) -> Path:
    """Write H×W, H×W×1 or H×W×3 float pixels in [0, 1] (clipped, rounded) atomically.

    The format follows the suffix. Formats that cannot hold 16 bits get 8; JPEG and BMP
    drop alpha (see the module table). WebP is lossless when `quality` is 100. Missing
    parent directories are created. Returns the written path.
    """
    path = Path(path)
    fmt = _WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(_WRITE_FORMATS))
        raise RestoreError(f"cannot write '{path}': unknown image suffix '{path.suffix}' (use one of {known})")
    if bit_depth not in (8, 16):
        raise RestoreError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
    if not (isinstance(quality, int) and 1 <= quality <= 100):
        raise RestoreError(f"quality must be an integer from 1 to 100, got {quality!r}")
    colour, alpha = _split_pixels(pixels, alpha)
    if fmt not in _ALPHA_FORMATS:
        alpha = None
    plain_gray = colour.shape[2] == 1 and alpha is None
    if not (fmt == "PNG" or (fmt == "TIFF" and plain_gray)):
        bit_depth = 8  # Pillow writes 16-bit TIFF only as plain gray (I;16)
    icc = None if fmt == "BMP" else _compatible_icc(icc_profile, colour.shape[2])
    data = _encode(fmt, colour, alpha, bit_depth, icc, quality)
    _atomic_write(path, data, overwrite)
    return path


def _split_pixels(pixels, alpha) -> tuple[np.ndarray, np.ndarray | None]:
    arr = np.asarray(pixels)
    if not np.issubdtype(arr.dtype, np.floating):  # 0–255 integers would all clip to white
        raise RestoreError(f"pixels must be floats in [0, 1], got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or 0 in arr.shape:
        raise RestoreError(f"pixels must be H×W, H×W×1 or H×W×3, got shape {tuple(np.shape(pixels))}")
    if arr.shape[2] == 4:  # RGBA given as one array
        if alpha is not None:
            raise RestoreError("pixels already have an alpha channel; do not pass alpha as well")
        arr, alpha = arr[..., :3], arr[..., 3]
    if alpha is not None:
        alpha = np.asarray(alpha)
        if not np.issubdtype(alpha.dtype, np.floating):
            raise RestoreError(f"alpha must be floats in [0, 1], got dtype {alpha.dtype}")
        if alpha.ndim == 3 and alpha.shape[2] == 1:
            alpha = alpha[..., 0]
        if alpha.shape != arr.shape[:2]:
            raise RestoreError(f"alpha must be H×W = {arr.shape[:2]}, got shape {alpha.shape}")
    return arr, alpha


def _quantize(arr: np.ndarray, bit_depth: int) -> np.ndarray:
    """Clip, scale and round in float64, a band of rows at a time: the float64 temporaries
    of a whole 48 MP colour image would take several GB."""
    peak = 65535 if bit_depth == 16 else 255
    arr = np.asarray(arr)
    out = np.empty(arr.shape, np.uint16 if bit_depth == 16 else np.uint8)
    rows = max(1, (1 << 20) // max(1, arr[0].size)) if arr.ndim > 1 and len(arr) else 1
    for top in range(0, len(arr), rows):
        band = np.nan_to_num(np.asarray(arr[top : top + rows], np.float64), nan=0.0, posinf=1.0, neginf=0.0)
        out[top : top + rows] = np.rint(np.clip(band, 0.0, 1.0) * peak)
    return out


def _encode(fmt: str, colour: np.ndarray, alpha, bit_depth: int, icc, quality: int) -> bytes | memoryview:
    samples = colour if alpha is None else np.concatenate([colour, alpha[..., None]], axis=2)
    samples = _quantize(samples, bit_depth)
    if bit_depth == 16 and samples.shape[2] > 1:  # colour or alpha at 16 bits: PNG only
        return _encode_png(samples, icc)
    image = Image.fromarray(samples[..., 0] if samples.shape[2] == 1 else samples)  # L, I;16, LA, RGB, RGBA
    del samples  # Pillow has its own copy: one less image-sized buffer while encoding
    options: dict = {}
    if icc:
        options["icc_profile"] = icc
    if fmt == "JPEG":
        options.update(quality=quality, subsampling=0 if quality >= 90 else 2)  # keep chroma at high quality
    elif fmt == "WEBP":
        options.update(quality=quality, lossless=quality == 100, exact=True)  # exact: keep RGB under alpha 0
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getbuffer()  # the encoded bytes without a copy (getvalue would copy them)


def _atomic_write(path: Path, data: bytes | memoryview, overwrite: bool) -> None:
    """User-facing checks (never replace a file without --overwrite, one-line reasons), then
    `restore.atomic.atomic_write`: readers see the old file or the new one, never a partial image."""
    if path.is_dir():
        raise RestoreError(f"cannot write '{path}': it is a directory")
    if path.exists() and not overwrite:
        raise RestoreError(f"'{path}' already exists (use --overwrite to replace it)")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RestoreError(f"cannot write '{path}': '{parent}' exists and is not a directory") from None
    except OSError as e:
        raise RestoreError(f"cannot write '{path}': cannot create directory '{parent}' ({e.strerror or e})") from None
    try:
        atomic_write(path, data)
    except PermissionError as e:  # creating the temp file or renaming it: the folder refuses
        raise RestoreError(f"cannot write '{path}': directory '{parent}' is not writable ({e.strerror or e})") from None
    except OSError as e:
        raise RestoreError(f"cannot write '{path}': {e.strerror or _one_line(e)}") from None


def save_like(path: str | Path, pixels: np.ndarray, like: LoadedImage, overwrite: bool = False) -> Path:
    """Write `pixels` the way `like` was stored: bit depth, gray/colour, alpha, ICC profile."""
    colour, _ = _split_pixels(pixels, None)
    colour = colour[..., :3].astype(np.float32, copy=False)  # read only below: no copy of a big image
    if like.is_gray and colour.shape[2] == 3:
        colour = (colour @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]  # as Pillow's RGB→L
    elif not like.is_gray and colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    alpha = like.alpha
    if alpha is not None and alpha.shape != colour.shape[:2]:
        resized = Image.fromarray(alpha.astype(np.float32)).resize((colour.shape[1], colour.shape[0]), Image.BICUBIC)
        alpha = np.clip(np.asarray(resized), 0, 1)
    return write_image(
        path,
        colour,
        alpha=alpha,
        bit_depth=like.bit_depth,
        icc_profile=like.icc_profile,
        overwrite=overwrite,
    )


# ------------------------------------------------------------------ inputs and outputs


def expand_inputs(items: Sequence[str | Path]) -> list[Path]:
    """Files, directories (their image files, non-recursive, sorted) and glob patterns →
    de-duplicated paths in first-seen order. An item that matches nothing is an error."""
    found: list[Path] = []
    seen: set[Path] = set()
    for item in items:
        path = Path(item)
        if path.is_dir():
            matches = sorted(p for p in path.iterdir() if _is_image_file(p))
            if not matches:
                raise RestoreError(f"no image files in directory '{item}'")
        elif path.is_file():
            matches = [path]  # named explicitly: read_image will judge it
        elif any(ch in str(item) for ch in "*?["):  # a glob pattern
            matches = sorted(Path(p) for p in glob.glob(str(item), recursive=True) if _is_image_file(Path(p)))
            if not matches:
                raise RestoreError(f"no image files match '{item}'")
        else:
            raise RestoreError(f"no such file or directory: '{item}'")
        for match in matches:
            key = match.resolve()
            if key not in seen:
                seen.add(key)
                found.append(match)
    return found


def _is_image_file(path: Path) -> bool:
    # dotfiles include macOS "._x.png" resource forks and our own in-progress temp files
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()


def output_path_for(
    input_path: str | Path, task: str, output_dir: Path | None = None, suffix: str = ".png"
) -> Path:
    """`NAME_<task><suffix>` beside the input, or inside `output_dir`."""
    input_path = Path(input_path)
    if not task or any(sep in task for sep in ("/", "\\", os.sep)):
        raise RestoreError(f"invalid task name for an output file: {task!r}")
    suffix = suffix if suffix.startswith(".") else f".{suffix}"
    if suffix.lower() not in _WRITE_FORMATS:
        raise RestoreError(f"cannot write '{suffix}' files (use one of {', '.join(sorted(_WRITE_FORMATS))})")
    directory = Path(output_dir) if output_dir is not None else input_path.parent
    return directory / f"{input_path.stem}_{task}{suffix}"


# ------------------------------------------------------------------------- tensors


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """H×W or H×W×C array → new float32 tensor 1×C×H×W (never shares memory with the input)."""
    arr = np.asarray(pixels, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise RestoreError(f"expected an H×W or H×W×C image, got shape {arr.shape}")
    return torch.from_numpy(arr.transpose(2, 0, 1).copy()).unsqueeze(0)


def from_tensor(t: torch.Tensor) -> np.ndarray:
    """1×C×H×W or C×H×W tensor → new float32 H×W×C array (values are not clipped)."""
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise RestoreError(f"expected a single image (batch of 1), got a batch of {t.shape[0]}")
        t = t[0]
    if t.ndim != 3:
        raise RestoreError(f"expected a 1×C×H×W or C×H×W tensor, got shape {tuple(t.shape)}")
    return t.detach().to("cpu", torch.float32).permute(1, 2, 0).numpy().copy()
