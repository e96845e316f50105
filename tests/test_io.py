from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, ImageFile, ImageOps

import restore.atomic as atomic
from restore.errors import RestoreError
from restore.io import (
    LoadedImage,
    expand_inputs,
    from_tensor,
    output_path_for,
    read_image,
    save_like,
    to_tensor,
    write_image,
)

H, W = 17, 23


def _levels(h: int, w: int, channels: int, depth: int, seed: int = 0) -> np.ndarray:
    """Random pixels exactly representable at `depth` bits, as read_image returns them."""
    peak = 65535 if depth == 16 else 255
    ints = np.random.default_rng(seed).integers(0, peak + 1, (h, w, channels))
    return ints.astype(np.float32) / np.float32(peak)


def _smooth(h: int, w: int, channels: int) -> np.ndarray:
    """A smooth image: what lossy codecs are designed for."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    planes = [0.5 + 0.4 * np.sin(xx / 7 + c) * np.cos(yy / 9) for c in range(channels)]
    return np.rint(np.stack(planes, axis=2) * 255).astype(np.float32) / np.float32(255)


def _srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _reference_png16(samples: np.ndarray, *, interlace: bool = False, extra: bytes = b"") -> bytes:
    """A deliberately naive 16-bit PNG encoder (byte loops, every filter type, Adam7), written
    independently of restore.io to check its decoder."""
    h, w, c = samples.shape
    bpp = 2 * c

    def filtered(img: np.ndarray, first_kind: int) -> bytes:
        out, previous = bytearray(), [0] * (img.shape[1] * bpp)
        for r, row in enumerate(img):
            line = list(row.astype(">u2").tobytes())
            kind = (first_kind + r) % 5
            out.append(kind)
            for i, value in enumerate(line):
                a = line[i - bpp] if i >= bpp else 0
                b = previous[i]
                c_ = previous[i - bpp] if i >= bpp else 0
                p = a + b - c_
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c_)
                paeth = a if pa <= pb and pa <= pc else (b if pb <= pc else c_)
                out.append((value - (0, a, b, (a + b) // 2, paeth)[kind]) % 256)
            previous = line
        return bytes(out)

    if interlace:
        passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
        sub_images = [samples[y0::dy, x0::dx] for x0, y0, dx, dy in passes]
        data = b"".join(filtered(img, i) for i, img in enumerate(sub_images) if img.size)
    else:
        data = filtered(samples, 0)
    compressed = zlib.compress(data)
    half = len(compressed) // 2  # two IDAT chunks: the decoder must join them
    ihdr = struct.pack(">IIBBBBB", w, h, 16, {2: 4, 3: 2, 4: 6}[c], 0, 0, int(interlace))
    return b"".join(
        [b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", ihdr), extra, _chunk(b"IDAT", compressed[:half]),
         _chunk(b"IDAT", compressed[half:]), _chunk(b"IEND", b"")]
    )


def _bomb_png(width: int, height: int, depth: int = 8, colour_type: int = 0) -> bytes:
    """A valid-looking PNG header that declares a huge size over a tiny payload."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    body = _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


# ------------------------------------------------------------------------ round trips

LOSSLESS = [
    # name, channels, alpha, bit depth
    ("g8.png", 1, False, 8),
    ("g16.png", 1, False, 16),
    ("rgb8.png", 3, False, 8),
    ("rgb16.png", 3, False, 16),
    ("rgba8.png", 3, True, 8),
    ("rgba16.png", 3, True, 16),
    ("la8.png", 1, True, 8),
    ("la16.png", 1, True, 16),
    ("g8.bmp", 1, False, 8),
    ("rgb8.bmp", 3, False, 8),
    ("g8.tif", 1, False, 8),
    ("g16.tiff", 1, False, 16),
    ("rgb8.tif", 3, False, 8),
    ("rgba8.tif", 3, True, 8),
    ("la8.tif", 1, True, 8),
    ("rgb8.webp", 3, False, 8),
    ("rgba8.webp", 3, True, 8),
]


@pytest.mark.parametrize("name, channels, has_alpha, depth", LOSSLESS)
def test_lossless_round_trip(tmp_path, name, channels, has_alpha, depth):
    pixels = _levels(H, W, channels, depth)
    alpha = _levels(H, W, 1, depth, seed=1)[..., 0] if has_alpha else None
    written = write_image(tmp_path / name, pixels, alpha=alpha, bit_depth=depth, quality=100)
    img = read_image(written)
    assert (img.height, img.width, img.is_gray, img.bit_depth) == (H, W, channels == 1, depth)
    assert img.pixels.dtype == np.float32
    np.testing.assert_array_equal(img.pixels, pixels)
    if has_alpha:
        np.testing.assert_array_equal(img.alpha, alpha)  # passed through exactly
    else:
        assert img.alpha is None


def test_16bit_png_keeps_precision_beyond_8_bits(tmp_path):
    pixels = np.full((4, 5, 3), 1000 / 65535, np.float32)  # invisible at 8 bits
    pixels[0, 0] = 1001 / 65535
    img = read_image(write_image(tmp_path / "a.png", pixels, bit_depth=16))
    assert img.pixels[0, 0, 0] != img.pixels[0, 1, 0]


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_round_trip_is_close(tmp_path, channels):
    pixels = _smooth(48, 64, channels)
    img = read_image(write_image(tmp_path / "a.jpg", pixels, quality=95))
    assert img.pixels.shape == pixels.shape and img.bit_depth == 8
    assert np.abs(img.pixels - pixels).mean() < 0.01


def test_jpeg_and_bmp_fall_back_to_8_bits_without_alpha(tmp_path):
    pixels, alpha = _levels(H, W, 3, 16), np.full((H, W), 0.5, np.float32)
    for name in ("a.jpeg", "a.bmp"):
        img = read_image(write_image(tmp_path / name, pixels, alpha=alpha, bit_depth=16))
        assert img.bit_depth == 8 and img.alpha is None and img.pixels.shape == (H, W, 3)


def test_tiff_colour_16bit_falls_back_to_8_bits(tmp_path):
    pixels = _levels(H, W, 3, 16)
    img = read_image(write_image(tmp_path / "a.tif", pixels, bit_depth=16))
    assert img.bit_depth == 8
    np.testing.assert_allclose(img.pixels, pixels, atol=0.5 / 255 + 1e-6)


def test_gray_webp_reads_back_as_equal_channels(tmp_path):
    pixels = _levels(H, W, 1, 8)
    img = read_image(write_image(tmp_path / "g.webp", pixels, quality=100))
    np.testing.assert_array_equal(img.pixels, np.repeat(pixels, 3, axis=2))


def test_write_clips_and_rounds(tmp_path):
    pixels = np.array([[-0.5, 0.2 / 255, 0.6 / 255, 2.0, np.nan]], np.float32)
    img = read_image(write_image(tmp_path / "c.png", pixels))
    np.testing.assert_array_equal(img.pixels[0, :, 0] * 255, [0, 0, 1, 255, 0])


# ----------------------------------------------------------------- Pillow source modes


def _pillow_file(tmp_path: Path, image: Image.Image, name: str, **options) -> Path:
    path = tmp_path / name
    image.save(path, **options)
    return path


def test_palette_reads_as_rgb(tmp_path):
    rgb = (_smooth(H, W, 3) * 255).astype(np.uint8)
    pal = Image.fromarray(rgb).quantize(16)
    img = read_image(_pillow_file(tmp_path, pal, "p.png"))
    assert img.source_mode == "P" and img.alpha is None and img.bit_depth == 8
    np.testing.assert_array_equal(img.pixels * 255, np.asarray(pal.convert("RGB")))


def test_palette_with_transparency_reads_as_rgba(tmp_path):
    pal = Image.fromarray((_smooth(H, W, 3) * 255).astype(np.uint8)).quantize(16)
    img = read_image(_pillow_file(tmp_path, pal, "p.png", transparency=0))
    expected_alpha = (np.asarray(pal) != 0).astype(np.float32)
    np.testing.assert_array_equal(img.alpha, expected_alpha)


def test_gray_palette_reads_as_gray(tmp_path):
    pal = Image.new("P", (W, H))
    pal.putpalette([v for i in range(256) for v in (i, i, i)])
    pal.putdata([i % 256 for i in range(W * H)])
    img = read_image(_pillow_file(tmp_path, pal, "gp.png"))
    assert img.is_gray
    np.testing.assert_array_equal(img.pixels[..., 0] * 255, np.asarray(pal))


def test_la_and_bilevel_and_colour_key(tmp_path):
    la = Image.fromarray((_levels(H, W, 2, 8) * 255).astype(np.uint8))
    assert la.mode == "LA"
    img = read_image(_pillow_file(tmp_path, la, "la.png"))
    assert img.is_gray and img.alpha is not None
    bilevel = Image.new("1", (W, H), 1)
    img = read_image(_pillow_file(tmp_path, bilevel, "b.png"))
    assert img.is_gray and img.pixels.min() == 1.0
    keyed = Image.new("RGB", (W, H), (10, 20, 30))
    keyed.putpixel((0, 0), (1, 2, 3))
    img = read_image(_pillow_file(tmp_path, keyed, "k.png", transparency=(10, 20, 30)))
    assert img.alpha[0, 0] == 1.0 and img.alpha.sum() == 1.0  # only the key colour is transparent


def test_cmyk_reads_as_rgb(tmp_path):
    for name in ("c.jpg", "c.tif"):
        img = read_image(_pillow_file(tmp_path, Image.new("CMYK", (W, H), (0, 255, 255, 0)), name))
        assert img.source_mode == "CMYK" and img.pixels.shape == (H, W, 3)
        assert img.pixels[..., 0].mean() > 0.9 and img.pixels[..., 1].mean() < 0.1  # red


def test_float_tiff_normalised_is_kept_and_other_is_scaled(tmp_path):
    values = np.linspace(0, 1, H * W, dtype=np.float32).reshape(H, W)
    img = read_image(_pillow_file(tmp_path, Image.fromarray(values), "f.tif"))
    assert img.source_mode == "F" and img.bit_depth == 16
    np.testing.assert_allclose(img.pixels[..., 0], values)
    for scale, top in ((255, 255), (400, 65535), (1e6, 1e6)):  # 0–255 data keeps its brightness
        img = read_image(_pillow_file(tmp_path, Image.fromarray(values * scale), f"f{scale}.tif"))
        np.testing.assert_allclose(img.pixels[..., 0], values * scale / top, atol=1e-6)


def test_32bit_integer_image_is_scaled(tmp_path):
    values = (np.arange(H * W, dtype=np.int32).reshape(H, W) * 1000)
    img = read_image(_pillow_file(tmp_path, Image.fromarray(values), "i.tif"))
    assert img.bit_depth == 16
    np.testing.assert_allclose(img.pixels[..., 0], values / values.max(), atol=1e-6)


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("L", (W, H), v) for v in (40, 200)]
    path = tmp_path / "a.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    img = read_image(path)
    assert img.pixels.mean() == pytest.approx(40 / 255, abs=1e-6)


# ------------------------------------------------------------------ 16-bit colour PNG


@pytest.mark.parametrize("channels", [2, 3, 4])
@pytest.mark.parametrize("interlace", [False, True])
def test_png16_decoder_handles_every_filter_and_interlace(tmp_path, channels, interlace):
    samples = np.random.default_rng(channels).integers(0, 65536, (13, 11, channels)).astype(np.uint16)
    path = tmp_path / "ref.png"
    path.write_bytes(_reference_png16(samples, interlace=interlace))
    img = read_image(path)
    n_colour = 3 if channels >= 3 else 1
    assert img.bit_depth == 16
    np.testing.assert_array_equal(np.rint(img.pixels * 65535), samples[..., :n_colour])
    if channels in (2, 4):
        np.testing.assert_array_equal(np.rint(img.alpha * 65535), samples[..., -1])


def test_png16_encoder_agrees_with_pillows_8bit_view(tmp_path):
    samples = np.random.default_rng(0).integers(0, 65536, (H, W, 3)).astype(np.uint16)
    path = write_image(tmp_path / "a.png", samples / np.float32(65535), bit_depth=16)
    with Image.open(path) as im:  # Pillow keeps the high byte of each 16-bit sample
        np.testing.assert_array_equal(np.asarray(im), (samples >> 8).astype(np.uint8))


def test_png16_exif_orientation_and_icc(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    icc = _srgb_profile()
    extra = _chunk(b"eXIf", exif.tobytes()) + _chunk(b"iCCP", b"sRGB\0\0" + zlib.compress(icc))
    samples = np.random.default_rng(0).integers(0, 65536, (5, 9, 3)).astype(np.uint16)
    path = tmp_path / "o.png"
    path.write_bytes(_reference_png16(samples, extra=extra))
    img = read_image(path)
    assert img.pixels.shape == (9, 5, 3) and img.icc_profile == icc
    np.testing.assert_array_equal(np.rint(img.pixels * 65535), np.rot90(samples, -1))


def test_png16_corrupt_crc_and_truncation(tmp_path):
    data = bytearray(_reference_png16(np.zeros((6, 6, 3), np.uint16)))
    (tmp_path / "cut.png").write_bytes(bytes(data[:-30]))
    data[40] ^= 0xFF  # inside IDAT: the CRC no longer matches
    (tmp_path / "crc.png").write_bytes(bytes(data))
    for name in ("cut.png", "crc.png"):
        with pytest.raises(RestoreError, match=name):
            read_image(tmp_path / name)


# ----------------------------------------------------------------- EXIF orientation


def test_jpeg_exif_orientation_6_is_transposed(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _pillow_file(tmp_path, Image.new("RGB", (40, 20), (200, 10, 10)), "o.jpg", exif=exif.tobytes())
    assert read_image(path).pixels.shape == (40, 20, 3)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow_exif_transpose(tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    rgb = (_levels(5, 7, 3, 8) * 255).astype(np.uint8)
    path = _pillow_file(tmp_path, Image.fromarray(rgb), "o.png", exif=exif.tobytes())
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    np.testing.assert_array_equal(read_image(path).pixels * 255, expected)


# ------------------------------------------------------------------------ ICC profile


def test_icc_profile_round_trips_and_mismatched_profiles_are_dropped(tmp_path):
    icc = _srgb_profile()
    for name, depth in (("a.png", 8), ("b.png", 16), ("c.jpg", 8), ("d.tif", 8)):
        written = write_image(tmp_path / name, _levels(H, W, 3, 8), icc_profile=icc, bit_depth=depth)
        assert read_image(written).icc_profile == icc
    # an RGB profile cannot describe gray pixels
    assert read_image(write_image(tmp_path / "g.png", _levels(H, W, 1, 8), icc_profile=icc)).icc_profile is None


# ----------------------------------------------------------------------------- limits


def test_max_pixels_refuses_large_images(tmp_path):
    path = write_image(tmp_path / "big.png", _levels(80, 100, 3, 8))
    with pytest.raises(RestoreError, match=r"big\.png.*100×80.*--max-pixels"):
        read_image(path, max_pixels=1000)
    assert read_image(path, max_pixels=None).width == 100


@pytest.mark.parametrize("depth, colour_type", [(8, 0), (16, 2)])
def test_decompression_bomb_is_refused_before_decoding(tmp_path, depth, colour_type):
    path = tmp_path / "bomb.png"
    path.write_bytes(_bomb_png(40000, 40000, depth, colour_type))  # Pillow itself refuses this size
    with pytest.raises(RestoreError, match=r"bomb\.png' is 40000×40000 = 1600 MP, above the limit of 100 MP"):
        read_image(path)


def test_invalid_max_pixels(tmp_path):
    with pytest.raises(RestoreError, match="max_pixels"):
        read_image(tmp_path / "x.png", max_pixels=0)


# ----------------------------------------------------------------------- read errors


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncated(tmp_path: Path, name: str) -> Path:
    path = write_image(tmp_path / f"full_{name}", _levels(64, 64, 3, 8), quality=90)
    data = path.read_bytes()
    return _write_bytes(tmp_path / name, data[: len(data) // 2])


BAD_FILES = {
    "missing": lambda d: d / "missing.png",
    "directory": lambda d: (d / "folder.png").mkdir() or d / "folder.png",
    "zero bytes": lambda d: _write_bytes(d / "empty.png", b""),
    "random bytes": lambda d: _write_bytes(d / "noise.png", np.random.default_rng(0).bytes(500)),
    "html": lambda d: _write_bytes(d / "page.png", b"<!DOCTYPE html><html><body>404</body></html>\n"),
    "text": lambda d: _write_bytes(d / "notes.txt", b"hello\nworld\n"),
    "truncated png": lambda d: _truncated(d, "cut.png"),
    "truncated jpeg": lambda d: _truncated(d, "cut.jpg"),
}


@pytest.mark.parametrize("kind", BAD_FILES)
def test_unreadable_files_raise_one_line_naming_the_file(tmp_path, kind):
    path = BAD_FILES[kind](tmp_path)
    with pytest.raises(RestoreError) as info:
        read_image(path)
    message = str(info.value)
    assert path.name in message and "\n" not in message


def test_truncated_file_fails_even_if_lenient_loading_was_enabled(tmp_path, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RestoreError, match="truncated"):
        read_image(_truncated(tmp_path, "cut.png"))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # someone else's setting is restored


# ------------------------------------------------------------------------ atomic write


def test_refuses_to_overwrite_unless_asked(tmp_path):
    path = write_image(tmp_path / "a.png", _levels(H, W, 1, 8))
    before = path.read_bytes()
    with pytest.raises(RestoreError, match="already exists"):
        write_image(path, _levels(H, W, 1, 8, seed=5))
    assert path.read_bytes() == before
    write_image(path, _levels(H, W, 1, 8, seed=5), overwrite=True)
    np.testing.assert_array_equal(read_image(path).pixels, _levels(H, W, 1, 8, seed=5))


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), RuntimeError("boom")])
def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch, error):
    def failing_replace(src, dst):
        raise error

    monkeypatch.setattr(os, "replace", failing_replace)
    expected = RestoreError if isinstance(error, OSError) else RuntimeError
    with pytest.raises(expected):
        write_image(tmp_path / "a.png", _levels(H, W, 3, 8))
    assert list(tmp_path.iterdir()) == []


def test_written_file_has_normal_permissions(tmp_path):
    path = write_image(tmp_path / "a.png", _levels(H, W, 1, 8))
    assert path.stat().st_mode & 0o777 == 0o666 & ~atomic.current_umask()


def test_creates_missing_output_directories(tmp_path):
    path = write_image(tmp_path / "new" / "dir" / "a.png", _levels(H, W, 1, 8))
    assert path.is_file()


def test_unwritable_destination(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RestoreError, match="not a directory"):
        write_image(tmp_path / "file" / "a.png", _levels(H, W, 1, 8))
    (tmp_path / "d.png").mkdir()
    with pytest.raises(RestoreError, match="is a directory"):
        write_image(tmp_path / "d.png", _levels(H, W, 1, 8))


def test_directory_refusing_new_files(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)  # what a read-only dir does
    with pytest.raises(RestoreError, match="not writable"):
        write_image(tmp_path / "a.png", _levels(H, W, 1, 8))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_directory(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(RestoreError, match="not writable"):
            write_image(locked / "a.png", _levels(H, W, 1, 8))
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"path": "a.gif"},
        {"bit_depth": 12},
        {"quality": 0},
        {"pixels": np.zeros((4, 4, 2))},
        {"pixels": np.zeros((4,))},
        {"alpha": np.zeros((3, 3))},
        {"pixels": np.zeros((4, 4, 3), np.uint8)},  # 0–255 integers are a mistake, not white
    ],
)
def test_write_argument_mistakes(tmp_path, kwargs):
    args = {"path": "a.png", "pixels": np.zeros((4, 4, 3)), **kwargs}
    with pytest.raises(RestoreError):
        write_image(tmp_path / args.pop("path"), args.pop("pixels"), **args)
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------- save_like


def test_save_like_keeps_depth_alpha_mode_and_profile(tmp_path):
    icc = _srgb_profile()
    pixels, alpha = _levels(H, W, 3, 16), _levels(H, W, 1, 16, seed=2)[..., 0]
    source = read_image(write_image(tmp_path / "in.png", pixels, alpha=alpha, bit_depth=16, icc_profile=icc))
    out = read_image(save_like(tmp_path / "out.png", source.pixels, source))
    assert (out.bit_depth, out.source_mode, out.icc_profile) == (16, "RGBA", icc)
    np.testing.assert_array_equal(out.pixels, pixels)
    np.testing.assert_array_equal(out.alpha, alpha)


def test_save_like_matches_gray_or_colour_of_the_input(tmp_path):
    gray = LoadedImage(_levels(H, W, 1, 8), None, 8, "L")
    out = read_image(save_like(tmp_path / "g.png", np.repeat(gray.pixels, 3, axis=2), gray))
    assert out.is_gray
    np.testing.assert_allclose(out.pixels, gray.pixels, atol=1e-6)
    colour = LoadedImage(_levels(H, W, 3, 8), None, 8, "RGB")
    assert not read_image(save_like(tmp_path / "c.png", gray.pixels, colour)).is_gray


def test_save_like_resizes_alpha_when_size_changed(tmp_path):
    like = LoadedImage(_levels(H, W, 3, 8), np.ones((H, W), np.float32), 8, "RGBA")
    out = read_image(save_like(tmp_path / "big.png", _levels(2 * H, 2 * W, 3, 8), like))
    assert out.alpha.shape == (2 * H, 2 * W) and out.alpha.min() == 1.0


# ---------------------------------------------------------------- inputs and outputs


def test_expand_inputs_directory_glob_file_and_dedup(tmp_path):
    for name in ("b.png", "a.JPG", "c.txt", ".hidden.png", "._a.png"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.png").write_bytes(b"x")
    assert expand_inputs([tmp_path]) == [tmp_path / "a.JPG", tmp_path / "b.png"]  # sorted, images only
    assert expand_inputs([str(tmp_path / "*.png")]) == [tmp_path / "b.png"]
    assert expand_inputs([str(tmp_path / "**" / "*.png")]) == [tmp_path / "b.png", tmp_path / "sub" / "d.png"]
    explicit = tmp_path / "c.txt"  # an explicitly named file is taken as is
    assert expand_inputs([tmp_path / "b.png", tmp_path, explicit]) == [tmp_path / "b.png", tmp_path / "a.JPG", explicit]
    assert expand_inputs([]) == []


@pytest.mark.parametrize("item", ["missing.png", "*.webp", "empty"])
def test_expand_inputs_item_matching_nothing(tmp_path, item):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RestoreError, match=item.replace("*", r"\*").replace(".", r"\.")):
        expand_inputs([str(tmp_path / item)])


def test_output_path_for():
    assert output_path_for(Path("in/cat.jpg"), "denoise") == Path("in/cat_denoise.png")
    assert output_path_for("in/cat.jpg", "derain", Path("out")) == Path("out/cat_derain.png")
    assert output_path_for("cat.png", "x", suffix="tif") == Path("cat_x.tif")
    for task, suffix in (("", ".png"), ("a/b", ".png"), ("x", ".gif")):
        with pytest.raises(RestoreError):
            output_path_for("cat.png", task, suffix=suffix)


# ------------------------------------------------------------------------- tensors


def test_tensor_conversions_round_trip_without_sharing_memory():
    pixels = _levels(H, W, 3, 8)
    t = to_tensor(pixels)
    assert t.shape == (1, 3, H, W) and t.dtype == torch.float32
    np.testing.assert_array_equal(from_tensor(t), pixels)
    np.testing.assert_array_equal(from_tensor(t[0]), pixels)
    gray = _levels(H, W, 1, 8)
    t = to_tensor(gray[..., 0])
    assert t.shape == (1, 1, H, W)
    t += 1  # must not change the array it came from
    assert gray.max() <= 1.0
    back = from_tensor(t)
    t -= 1
    assert back.shape == (H, W, 1) and back.min() >= 1.0
    with pytest.raises(RestoreError):
        from_tensor(torch.zeros(2, 3, 4, 4))
