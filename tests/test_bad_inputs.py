"""Bad, odd and hostile input files never crash `restore denoise` (issue #8, items 1–2).

A corpus of 60+ files is generated into tmp_path at test time (no binary junk in git):
each file is either restored (exit 0, one output of the right size, nothing else) or
rejected with one clear line (non-zero exit, no traceback, no output file at all). Then
the whole folder goes through one batch run: every good file is restored, every bad one
skipped with a line, and a summary is printed.

Inputs are never lost: an output path that resolves to the input is refused without
--overwrite, and a crash in the middle of writing the output leaves the input untouched
and no partial output behind.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms
from typer.testing import CliRunner

from restore.cli import app

runner = CliRunner()
OK, REJECT = "restored", "rejected"


# --------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class Case:
    name: str  # file name inside the corpus folder
    expect: str  # OK or REJECT
    size: tuple[int, int] | None = None  # expected (width, height) of the output, for OK
    message: str = ""  # expected part of the one-line error, for REJECT


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _rgb(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def _gray(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(_rng(seed).integers(0, 256, (h, w), dtype=np.uint8), "L")


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png(width: int, height: int, depth: int, colour: int, raw: bytes, *, extra: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra + _chunk(b"IDAT", zlib.compress(raw))
            + _chunk(b"IEND", b""))


def _bomb_png(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose IHDR declares width×height: a few zero rows, then nothing."""
    return _png(width, height, 8, 0, b"\0" * (width + 1) * 4)


def _exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    return _encoded(_rgb(40, 24), "JPEG", exif=exif.tobytes(), quality=90)


def _animated(fmt: str) -> bytes:
    frames = [_rgb(32, 20, seed=s).convert("P") if fmt == "GIF" else _rgb(32, 20, seed=s) for s in range(3)]
    return _encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, loop=0)


def _tiff_float(values: np.ndarray) -> bytes:
    return _encoded(Image.fromarray(values.astype(np.float32), "F"), "TIFF")


def _multipage_tiff() -> bytes:
    return _encoded(_gray(20, 16), "TIFF", save_all=True, append_images=[_gray(30, 10, seed=1)])


def _zlib_bomb_text_png() -> bytes:
    """A small PNG with a zTXt chunk that inflates to 64 MB (Pillow caps text chunks)."""
    ztxt = b"Comment\0\0" + zlib.compress(b"A" * (64 << 20), 9)
    return _png(8, 8, 8, 0, b"\0" * 9 * 8, extra=_chunk(b"zTXt", ztxt))


def _bad_crc_png() -> bytes:
    data = bytearray(_encoded(_gray(16, 16), "PNG"))
    data[-20] ^= 0xFF  # inside the IDAT payload: CRC mismatch / zlib error
    return bytes(data)


def _corrupt_jpeg_body() -> bytes:
    data = bytearray(_encoded(_rgb(48, 48), "JPEG", quality=90))
    for i in range(len(data) // 2, len(data) - 2, 7):  # scramble the entropy-coded data
        data[i] = 0xFF
    return bytes(data)


def build_corpus(folder: Path) -> list[Case]:
    """Write the corpus into `folder`; return what each file should do."""
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def add(name: str, data: bytes, expect: str, size=None, message: str = "") -> None:
        (folder / name).write_bytes(data)
        cases.append(Case(name, expect, size, message))

    png_rgb = _encoded(_rgb(40, 30), "PNG")
    jpeg_rgb = _encoded(_rgb(40, 30), "JPEG", quality=90)
    tiff_rgb = _encoded(_rgb(40, 30), "TIFF")
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()

    # ---- good files, odd formats and modes: all must be restored, at their own size
    add("rgb.png", png_rgb, OK, (40, 30))
    add("rgb.jpg", jpeg_rgb, OK, (40, 30))
    add("rgb.tif", tiff_rgb, OK, (40, 30))
    add("rgb_lzw.tiff", _encoded(_rgb(40, 30), "TIFF", compression="tiff_lzw"), OK, (40, 30))
    add("rgb.bmp", _encoded(_rgb(40, 30), "BMP"), OK, (40, 30))
    add("rgb.webp", _encoded(_rgb(40, 30), "WEBP", lossless=True), OK, (40, 30))
    add("UPPER CASE é.PNG", png_rgb, OK, (40, 30))
    add("png_named.jpg", png_rgb, OK, (40, 30))  # content decides, not the suffix
    add("gray.png", _encoded(_gray(33, 17), "PNG"), OK, (33, 17))
    add("gray.jpg", _encoded(_gray(33, 17), "JPEG"), OK, (33, 17))
    add("progressive.jpg", _encoded(_rgb(40, 30), "JPEG", progressive=True), OK, (40, 30))
    add("bilevel.png", _encoded(_gray(30, 20).convert("1"), "PNG"), OK, (30, 20))
    add("palette.png", _encoded(_rgb(30, 20).quantize(16), "PNG"), OK, (30, 20))
    pal = _rgb(30, 20).quantize(16)
    add("palette_transparent.png", _encoded(pal, "PNG", transparency=0), OK, (30, 20))
    add("palette.gif", _encoded(_rgb(30, 20).convert("P"), "GIF"), OK, (30, 20))
    add("la.png", _encoded(Image.merge("LA", [_gray(30, 20), _gray(30, 20, 1)]), "PNG"), OK, (30, 20))
    add("rgba.png", _encoded(_rgb(30, 20).convert("RGBA"), "PNG"), OK, (30, 20))
    add("rgba.webp", _encoded(_rgb(30, 20).convert("RGBA"), "WEBP"), OK, (30, 20))
    add("colour_key.png", _encoded(_rgb(30, 20), "PNG", transparency=(0, 0, 0)), OK, (30, 20))
    g16 = Image.fromarray(_rng().integers(0, 65536, (20, 30), dtype=np.uint16))
    add("gray16.png", _encoded(g16, "PNG"), OK, (30, 20))
    add("gray16.tif", _encoded(g16, "TIFF"), OK, (30, 20))
    rgb16 = _rng().integers(0, 65536, (20, 30, 3)).astype(">u2").tobytes()
    add("rgb16.png", _png(30, 20, 16, 2, b"".join(b"\0" + rgb16[r * 180:(r + 1) * 180] for r in range(20))), OK, (30, 20))
    add("int32.png", _encoded(Image.fromarray(_rng().integers(0, 2**20, (20, 30)).astype(np.int32), "I"), "PNG"), OK, (30, 20))
    add("int32.tif", _encoded(Image.fromarray(_rng().integers(-5, 2**20, (20, 30)).astype(np.int32), "I"), "TIFF"), OK, (30, 20))
    add("float.tif", _tiff_float(_rng().random((20, 30))), OK, (30, 20))
    add("float_hdr.tif", _tiff_float(_rng().random((20, 30)) * 1000 - 10), OK, (30, 20))
    weird = _rng().random((20, 30))
    weird[0, :3] = [np.nan, np.inf, -np.inf]
    add("float_nan_inf.tif", _tiff_float(weird), OK, (30, 20))
    add("float_const_zero.tif", _tiff_float(np.zeros((20, 30))), OK, (30, 20))
    add("cmyk.jpg", _encoded(_rgb(40, 30).convert("CMYK"), "JPEG"), OK, (40, 30))
    add("cmyk.tif", _encoded(_rgb(40, 30).convert("CMYK"), "TIFF"), OK, (40, 30))
    add("ycbcr_lab.tif", _encoded(_rgb(40, 30).convert("LAB"), "TIFF"), OK, (40, 30))
    add("animated.gif", _animated("GIF"), OK, (32, 20))
    add("animated.webp", _animated("WEBP"), OK, (32, 20))
    add("multipage.tif", _multipage_tiff(), OK, (20, 16))
    add("exif_rotated.jpg", _exif_rotated_jpeg(), OK, (24, 40))  # shown upright: transposed
    exif_bad = Image.Exif()
    exif_bad[0x0112] = 9  # not a valid orientation: ignored
    add("exif_bad_orientation.jpg", _encoded(_rgb(40, 24), "JPEG", exif=exif_bad.tobytes()), OK, (40, 24))
    add("icc.png", _encoded(_rgb(40, 30), "PNG", icc_profile=srgb), OK, (40, 30))
    add("icc.jpg", _encoded(_rgb(40, 30), "JPEG", icc_profile=srgb), OK, (40, 30))
    add("garbage_icc.png", _encoded(_rgb(40, 30), "PNG", icc_profile=b"not a profile" * 4), OK, (40, 30))
    add("1x1_gray.png", _encoded(_gray(1, 1), "PNG"), OK, (1, 1))
    add("1x1_rgb.png", _encoded(_rgb(1, 1), "PNG"), OK, (1, 1))
    add("1x1.jpg", _encoded(_rgb(1, 1), "JPEG"), OK, (1, 1))
    add("2x3_gray.png", _encoded(_gray(2, 3), "PNG"), OK, (2, 3))
    add("2x3_rgb.png", _encoded(_rgb(2, 3), "PNG"), OK, (2, 3))
    add("3x2_rgba.png", _encoded(_rgb(3, 2).convert("RGBA"), "PNG"), OK, (3, 2))
    add("1x200.png", _encoded(_gray(1, 200), "PNG"), OK, (1, 200))
    add("300x1.png", _encoded(_rgb(300, 1), "PNG"), OK, (300, 1))
    add("flat_black.png", _encoded(Image.new("L", (40, 30)), "PNG"), OK, (40, 30))
    add("flat_white.png", _encoded(Image.new("RGB", (40, 30), "white"), "PNG"), OK, (40, 30))
    add("big_text_chunk.png", _zlib_bomb_text_png(), OK, (8, 8))  # Pillow drops the oversized text

    # ---- bad files: all must be rejected with one line naming the problem
    add("empty.png", b"", REJECT, message="empty")
    add("empty.jpg", b"", REJECT, message="empty")
    for cut in (4, 8, 20, 33, 60, len(png_rgb) // 2, len(png_rgb) - 20):
        add(f"cut_png_{cut}.png", png_rgb[:cut], REJECT, message="cannot read")
    for cut in (2, 10, 150, len(jpeg_rgb) // 2, len(jpeg_rgb) - 10):
        add(f"cut_jpeg_{cut}.jpg", jpeg_rgb[:cut], REJECT, message="cannot read")
    for cut in (4, 8, 100, len(tiff_rgb) // 2):
        add(f"cut_tiff_{cut}.tif", tiff_rgb[:cut], REJECT, message="cannot read")
    add("cut_rgb16.png", _png(30, 20, 16, 2, b"\0" * 1000)[:-30], REJECT, message="cannot read")
    add("cut_gif.gif", _animated("GIF")[:60], REJECT, message="cannot read")
    add("cut_webp.webp", _encoded(_rgb(40, 30), "WEBP")[:40], REJECT, message="cannot read")
    add("random.png", _rng(1).bytes(3000), REJECT, message="not an image")
    add("random.jpg", _rng(2).bytes(3000), REJECT, message="not an image")
    add("random.tif", b"II*\0" + _rng(3).bytes(3000), REJECT, message="cannot read")
    add("png_magic_then_noise.png", b"\x89PNG\r\n\x1a\n" + _rng(4).bytes(500), REJECT, message="cannot read")
    add("jpeg_magic_then_noise.jpg", b"\xff\xd8\xff\xe0" + _rng(5).bytes(500), REJECT, message="cannot read")
    add("notes.png", b"just some notes, not a picture\n" * 10, REJECT, message="not an image")
    add("page.png", b"<!DOCTYPE html><html><head><title>404</title></head><body>Not found</body></html>\n",
        REJECT, message="not an image")
    add("drawing.png", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', REJECT,
        message="not an image")
    add("bad_crc.png", _bad_crc_png(), REJECT, message="cannot read")
    add("corrupt_body.jpg", _corrupt_jpeg_body(), OK, (48, 48))  # libjpeg recovers: pixels are junk but valid
    add("zero_size.png", _png(0, 0, 8, 0, b""), REJECT, message="cannot read")
    add("zero_width16.png", _png(0, 10, 16, 2, b""), REJECT, message="cannot read")
    add("bomb.png", _bomb_png(200_000, 200_000), REJECT, message="above the limit")
    add("bomb16.png", _png(60_000, 60_000, 16, 2, b"\0" * 100), REJECT, message="above the limit")
    add("bomb_under_limit.png", _bomb_png(9000, 9000), REJECT, message="truncated or corrupt")
    add("bomb.gif", b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\x00\x00\x00" + b",\0\0\0\0"
        + struct.pack("<HH", 65535, 65535) + b"\x00\x02\x02\x44\x01\x00;", REJECT, message="above the limit")
    (folder / "readme.txt").write_text("a text file in the folder: not picked up by a batch\n")
    cases.append(Case("readme.txt", REJECT, message="not an image"))
    return cases
