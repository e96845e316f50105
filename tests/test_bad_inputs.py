"""Bad, odd and hostile input files never crash `restore` (issue #8, items 1, 2 and 5).

A corpus of 60+ files is generated into tmp_path at test time (no binary junk in git):
each file is either restored (exit 0, one output of the right size, nothing else) or
rejected with one clear line (non-zero exit, no traceback, no output file at all). Then
the whole folder goes through one batch run: every good file is restored, every bad one
skipped with a line, and a summary is printed.

Inputs are never lost: an output path that resolves to the input is refused without
--overwrite, and a crash in the middle of writing the output leaves the input untouched
and no partial output behind.

Untrusted files (item 5): hostile genotype JSON is refused before any layer is built,
weights are read as safetensors only (a pickle posing as weights never runs), tampered
zoo weights fail their sha256 before being read, and ONNX Runtime reads an .onnx file only
from the path the user gives.
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
    size: tuple[int, int] | None = None  # (width, height) of the output, for OK
    kind: str = "RGB8"  # what the output holds, for OK: L/LA/RGB/RGBA + bit depth
    message: str = ""  # part of the one-line error, for REJECT


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _rgb(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def _rgba(w: int, h: int, seed: int = 0) -> Image.Image:
    """Colour with a real (varying) alpha channel: an opaque one may be dropped by encoders."""
    return Image.fromarray(_rng(seed).integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")


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

    def add(name: str, data: bytes, expect: str, size=None, kind: str = "RGB8", message: str = "") -> None:
        (folder / name).write_bytes(data)
        cases.append(Case(name, expect, size, kind, message))

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
    add("gray.png", _encoded(_gray(33, 17), "PNG"), OK, (33, 17), kind="L8")
    add("gray.jpg", _encoded(_gray(33, 17), "JPEG"), OK, (33, 17), kind="L8")
    add("progressive.jpg", _encoded(_rgb(40, 30), "JPEG", progressive=True), OK, (40, 30))
    add("bilevel.png", _encoded(_gray(30, 20).convert("1"), "PNG"), OK, (30, 20), kind="L8")
    add("palette.png", _encoded(_rgb(30, 20).quantize(16), "PNG"), OK, (30, 20))
    pal = _rgb(30, 20).quantize(16)
    add("palette_transparent.png", _encoded(pal, "PNG", transparency=0), OK, (30, 20), kind="RGBA8")
    add("palette.gif", _encoded(_rgb(30, 20).convert("P"), "GIF"), OK, (30, 20))
    add("la.png", _encoded(Image.merge("LA", [_gray(30, 20), _gray(30, 20, 1)]), "PNG"), OK, (30, 20), kind="LA8")
    add("rgba.png", _encoded(_rgba(30, 20), "PNG"), OK, (30, 20), kind="RGBA8")
    add("rgba.webp", _encoded(_rgba(30, 20), "WEBP", lossless=True), OK, (30, 20), kind="RGBA8")
    add("colour_key.png", _encoded(_rgb(30, 20), "PNG", transparency=(0, 0, 0)), OK, (30, 20), kind="RGBA8")
    g16 = Image.fromarray(_rng().integers(0, 65536, (20, 30), dtype=np.uint16))
    add("gray16.png", _encoded(g16, "PNG"), OK, (30, 20), kind="L16")
    add("gray16.tif", _encoded(g16, "TIFF"), OK, (30, 20), kind="L16")
    rgb16 = _rng().integers(0, 65536, (20, 30, 3)).astype(">u2").tobytes()
    add("rgb16.png", _png(30, 20, 16, 2, b"".join(b"\0" + rgb16[r * 180:(r + 1) * 180] for r in range(20))), OK, (30, 20), kind="RGB16")
    add("int32.tif", _encoded(Image.fromarray(_rng().integers(-5, 2**20, (20, 30)).astype(np.int32), "I"), "TIFF"), OK, (30, 20), kind="L16")
    add("float.tif", _tiff_float(_rng().random((20, 30))), OK, (30, 20), kind="L16")
    add("float_hdr.tif", _tiff_float(_rng().random((20, 30)) * 1000 - 10), OK, (30, 20), kind="L16")
    weird = _rng().random((20, 30))
    weird[0, :3] = [np.nan, np.inf, -np.inf]
    add("float_nan_inf.tif", _tiff_float(weird), OK, (30, 20), kind="L16")
    add("float_const_zero.tif", _tiff_float(np.zeros((20, 30))), OK, (30, 20), kind="L16")
    add("cmyk.jpg", _encoded(_rgb(40, 30).convert("CMYK"), "JPEG"), OK, (40, 30))
    add("cmyk.tif", _encoded(_rgb(40, 30).convert("CMYK"), "TIFF"), OK, (40, 30))
    add("ycbcr_lab.tif", _encoded(_rgb(40, 30).convert("LAB"), "TIFF"), OK, (40, 30))
    add("animated.gif", _animated("GIF"), OK, (32, 20))
    add("animated.webp", _animated("WEBP"), OK, (32, 20))
    add("multipage.tif", _multipage_tiff(), OK, (20, 16), kind="L8")
    add("exif_rotated.jpg", _exif_rotated_jpeg(), OK, (24, 40))  # shown upright: transposed
    exif_bad = Image.Exif()
    exif_bad[0x0112] = 9  # not a valid orientation: ignored
    add("exif_bad_orientation.jpg", _encoded(_rgb(40, 24), "JPEG", exif=exif_bad.tobytes()), OK, (40, 24))
    add("icc.png", _encoded(_rgb(40, 30), "PNG", icc_profile=srgb), OK, (40, 30))
    add("icc.jpg", _encoded(_rgb(40, 30), "JPEG", icc_profile=srgb), OK, (40, 30))
    add("garbage_icc.png", _encoded(_rgb(40, 30), "PNG", icc_profile=b"not a profile" * 4), OK, (40, 30))
    add("1x1_gray.png", _encoded(_gray(1, 1), "PNG"), OK, (1, 1), kind="L8")
    add("1x1_rgb.png", _encoded(_rgb(1, 1), "PNG"), OK, (1, 1))
    add("1x1.jpg", _encoded(_rgb(1, 1), "JPEG"), OK, (1, 1))
    add("2x3_gray.png", _encoded(_gray(2, 3), "PNG"), OK, (2, 3), kind="L8")
    add("2x3_rgb.png", _encoded(_rgb(2, 3), "PNG"), OK, (2, 3))
    add("3x2_rgba.png", _encoded(_rgba(3, 2), "PNG"), OK, (3, 2), kind="RGBA8")
    add("1x200.png", _encoded(_gray(1, 200), "PNG"), OK, (1, 200), kind="L8")
    add("300x1.png", _encoded(_rgb(300, 1), "PNG"), OK, (300, 1))
    add("flat_black.png", _encoded(Image.new("L", (40, 30)), "PNG"), OK, (40, 30), kind="L8")
    add("flat_white.png", _encoded(Image.new("RGB", (40, 30), "white"), "PNG"), OK, (40, 30))

    # ---- bad files: all must be rejected with one line naming the problem
    add("empty.png", b"", REJECT, message="empty")
    add("empty.jpg", b"", REJECT, message="empty")
    for cut in (4, 8, 20, 33, 60, len(png_rgb) // 2, len(png_rgb) - 30):
        add(f"cut_png_{cut}.png", png_rgb[:cut], REJECT, message="cannot read")
    # only IEND (and the last CRC) missing: every pixel is there, so it is restored
    add("cut_png_no_iend.png", png_rgb[:-16], OK, (40, 30))
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
    add("corrupt_body.jpg", _corrupt_jpeg_body(), REJECT, message="corrupt")
    add("text_chunk_bomb.png", _zlib_bomb_text_png(), REJECT, message="corrupt image header")
    add("zero_size.png", _png(0, 0, 8, 0, b""), REJECT, message="cannot read")
    add("zero_width16.png", _png(0, 10, 16, 2, b""), REJECT, message="cannot read")
    add("bomb.png", _bomb_png(200_000, 200_000), REJECT, message="above the limit")
    add("bomb16.png", _png(60_000, 60_000, 16, 2, b"\0" * 100), REJECT, message="above the limit")
    add("bomb.gif", b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\x00\x00\x00" + b",\0\0\0\0"
        + struct.pack("<HH", 65535, 65535) + b"\x00\x02\x02\x44\x01\x00;", REJECT, message="above the limit")
    (folder / "readme.txt").write_text("a text file in the folder: not picked up by a batch\n")
    cases.append(Case("readme.txt", REJECT, message="not an image"))
    return cases


# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared, oversubscribed 2-core machine, two OpenMP threads
    make each small conv wait for a time slice (40× slower here)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[Case]]:
    folder = tmp_path_factory.mktemp("corpus")
    return folder, build_corpus(folder)


def invoke(*args):
    import gc
    import warnings

    gc.collect()  # objects left by earlier tests (e.g. Gradio's event loops) are finalised outside the window
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.invoke(app, [str(a) for a in args])
    # pytest would swallow warnings that a user sees on stderr: count them as output. Python's
    # default filters hide the deprecation and resource warnings from users, so they do not count.
    hidden = (DeprecationWarning, PendingDeprecationWarning, ResourceWarning)
    shown = [w for w in caught if not issubclass(w.category, hidden)]
    return result, [f"{w.category.__name__}: {w.message}" for w in shown]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def everything_in(folder: Path) -> list[str]:
    """Every entry, dotfiles (our temp files) included."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def output_kind(path: Path) -> str:
    from restore.io import read_image

    image = read_image(path)
    base = "L" if image.is_gray else "RGB"
    return f"{base}{'A' if image.alpha is not None else ''}{image.bit_depth}"


# --------------------------------------------------------------------------- 1. bad inputs


def test_corpus_is_big_and_varied(corpus):
    _, cases = corpus
    assert len(cases) >= 50
    assert sum(c.expect == OK for c in cases) >= 20 and sum(c.expect == REJECT for c in cases) >= 20


def test_every_file_is_restored_or_rejected_in_one_line(corpus, tmp_path):
    """`restore denoise FILE -o DIR` per file: exit 0 and exactly one correct output, or a
    non-zero exit with one line (no traceback, no warning) and no file at all."""
    folder, cases = corpus
    before = snapshot(folder)
    problems = []
    for case in cases:
        out = tmp_path / case.name
        result, warned = invoke("denoise", folder / case.name, "-o", out)
        text = result.output.strip()
        lines = text.splitlines()
        crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
        if crashed or "Traceback" in text or warned:
            problems.append(f"{case.name}: crashed or warned: {result.exception!r} {warned} {text[-300:]}")
            continue
        if case.expect == OK:
            expected = f"{Path(case.name).stem}_denoise.png"
            if result.exit_code != 0 or everything_in(out) != [expected]:
                problems.append(f"{case.name}: expected {expected}, got exit {result.exit_code}, "
                                f"files {everything_in(out)}: {text}")
                continue
            with Image.open(out / expected) as im:
                size = im.size
            kind = output_kind(out / expected)
            if size != case.size or kind != case.kind:
                problems.append(f"{case.name}: output {size} {kind}, expected {case.size} {case.kind}")
        else:
            if result.exit_code != 2 or len(lines) != 1 or not lines[0].startswith("error: "):
                problems.append(f"{case.name}: expected one error line and exit 2, got {result.exit_code}: {text!r}")
            elif case.message not in text or case.name not in text:
                problems.append(f"{case.name}: message should name the file and say {case.message!r}: {text!r}")
            if everything_in(out):
                problems.append(f"{case.name}: a rejected file left output behind: {everything_in(out)}")
    assert not problems, "\n".join(problems)
    assert snapshot(folder) == before  # no input was touched


def test_batch_over_the_whole_corpus(corpus, tmp_path):
    """One run over the folder: every good file restored, every bad one skipped with a line,
    a summary, exit 1 because some failed; same-named inputs (rgb.png, rgb.jpg…) all get
    their own output."""
    folder, cases = corpus
    images = [c for c in cases if Path(c.name).suffix.lower() in (".png", ".jpg", ".tif", ".tiff", ".bmp", ".webp", ".gif")]
    stems = [Path(c.name).stem for c in images]

    def output_name(case: Case) -> str:
        stem, ext = Path(case.name).stem, Path(case.name).suffix[1:].lower()
        return f"{stem}_{ext}_denoise.png" if stems.count(stem) > 1 else f"{stem}_denoise.png"

    good = [c for c in images if c.expect == OK]
    bad = [c for c in images if c.expect == REJECT]
    out = tmp_path / "out"
    result, warned = invoke("denoise", folder, "-o", out)
    text = result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in text and not warned
    assert result.exit_code == 1
    assert f"{len(good)} restored, {len(bad)} failed, of {len(images)} file(s)" in text
    assert everything_in(out) == sorted(output_name(c) for c in good)
    for case in bad:
        assert sum(line.startswith(f"skipped {folder / case.name}: ") for line in text.splitlines()) == 1, case.name
    assert "readme.txt" not in text  # not an image suffix: not picked from a folder
    for case in good:
        with Image.open(out / output_name(case)) as im:
            assert im.size == case.size, case.name


def test_tiny_images_are_padded_and_restored(tmp_path):
    """1×1 and 2×3 images go through the padded path of the tiled runtime (the default
    model needs multiples of 8) and come back at their own size, close to the input
    (σ is estimated as 0 on a few pixels, so a blind denoiser should barely change them)."""
    from restore.io import read_image

    for w, h in ((1, 1), (2, 3), (3, 2), (7, 9)):
        src = tmp_path / f"tiny_{w}x{h}.png"
        _gray(w, h).save(src)
        result, _ = invoke("denoise", src, "-o", tmp_path / "out")
        assert result.exit_code == 0, result.output
        restored = read_image(tmp_path / "out" / f"tiny_{w}x{h}_denoise.png").pixels
        assert restored.shape == (h, w, 1)
        assert np.isfinite(restored).all()
        assert "σ ≈ 0.0" in result.output


# --------------------------------------------------------------------------- 2. inputs are never lost


def test_output_that_is_the_input_is_refused(tmp_path):
    """-o points at a folder where NAME_denoise.png *is* the input (a symlink or a hard link
    to it): refused without --overwrite; with it, the link is replaced, never the input."""
    src_dir, out = tmp_path / "in", tmp_path / "out"
    src_dir.mkdir(), out.mkdir()
    src = src_dir / "a.png"
    _rgb(40, 30).save(src)
    original = src.read_bytes()
    (out / "a_denoise.png").symlink_to(src)
    result, _ = invoke("denoise", src, "-o", out)
    assert result.exit_code == 2
    assert result.output.strip() == f"error: output {out / 'a_denoise.png'} would replace the input; pass --overwrite to allow it"
    assert src.read_bytes() == original and everything_in(out) == ["a_denoise.png"]

    # the input reached through the symlink *as* the input, output beside it: the same refusal
    result, _ = invoke("denoise", out / "a_denoise.png", "-o", src_dir)
    assert result.exit_code == 0  # a_denoise_denoise.png: a new name, nothing replaced
    assert src.read_bytes() == original

    hard = tmp_path / "hard"
    hard.mkdir()
    os.link(src, hard / "a_denoise.png")
    result, _ = invoke("denoise", src, "-o", hard)
    assert result.exit_code == 2 and "would replace the input" in result.output

    result, _ = invoke("denoise", src, "-o", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert src.read_bytes() == original  # the link was replaced by a new file, not written through
    assert not (out / "a_denoise.png").is_symlink()


def test_same_named_inputs_do_not_clash(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for folder in (a, b):
        _rgb(24, 16).save(folder / "x.png")
    _rgb(24, 16).save(a / "x.jpg")
    result, _ = invoke("denoise", a / "x.png", a / "x.jpg", b / "x.png", "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert everything_in(tmp_path / "out") == ["x_jpg_denoise.png", "x_png_denoise.png"]
    assert f"skipped {b / 'x.png'}: {b / 'x.png'} and {a / 'x.png'} would both be written to" in result.output
    assert "2 restored, 1 failed, of 3 file(s)" in result.output


@pytest.mark.parametrize("failure", ["disk full", "interrupt"])
def test_crash_while_writing_the_output(tmp_path, monkeypatch, failure):
    """The output write dies half-way (half the bytes are in the temp file): the input is
    untouched, no output or temp file is left, and the CLI says so in one line."""
    import restore.io as rio

    src = tmp_path / "a.png"
    _rgb(40, 30).save(src)
    original = src.read_bytes()
    out = tmp_path / "out"
    real_fsync = os.fsync

    def dying_fsync(fd):
        os.ftruncate(fd, 100)  # a partial file on disk, as a crash would leave it
        if failure == "disk full":
            raise OSError(28, "No space left on device")
        raise KeyboardInterrupt

    monkeypatch.setattr(rio.os, "fsync", dying_fsync)
    result, _ = invoke("denoise", src, "-o", out)
    monkeypatch.setattr(rio.os, "fsync", real_fsync)
    code, line = (2, "No space left on device") if failure == "disk full" else (130, "error: interrupted")
    assert result.exit_code == code and line in result.output and len(result.output.strip().splitlines()) == 1
    assert src.read_bytes() == original
    assert everything_in(out) == []
    # over an existing output: the old one survives intact
    assert invoke("denoise", src, "-o", out)[0].exit_code == 0
    previous = (out / "a_denoise.png").read_bytes()
    monkeypatch.setattr(rio.os, "fsync", dying_fsync)
    result, _ = invoke("denoise", src, "-o", out, "--overwrite")
    assert result.exit_code == code
    assert (out / "a_denoise.png").read_bytes() == previous and everything_in(out) == ["a_denoise.png"]
    assert src.read_bytes() == original


# --------------------------------------------------------------------------- 5. untrusted files

GOOD_GENOTYPE = {
    "format": "restore-genotype", "version": 1, "space": "modnas", "name": "small",
    "head_channels": 8, "stages": 1, "in_channels": 1, "out_channels": 1, "noise_map": False,
    "encoder": [{"layers": [{"op": "conv_3x3", "channels": 8}], "sample": {"op": "area", "channels": 8}}],
    "decoder": [
        {"layers": [{"op": "conv_3x3", "channels": 8}], "sample": {"op": "nearest", "channels": 8}},
        {"layers": [{"op": "res_block_3x3", "channels": 8}], "sample": None, "fuse_channels": 8},
    ],
}


def _genotype(**changes) -> dict:
    import copy

    g = copy.deepcopy(GOOD_GENOTYPE)
    for path, value in changes.items():
        *keys, last = path.split("__")
        target = g
        for k in keys:
            target = target[int(k)] if k.isdigit() else target[k]
        target[int(last) if last.isdigit() else last] = value
    return g


HOSTILE_GENOTYPES = {
    "unknown op": (_genotype(encoder__0__layers__0__op="os.system"), "unknown"),
    "wrong version": (_genotype(version=2), "unsupported genotype version 2"),
    "no version": ({k: v for k, v in GOOD_GENOTYPE.items() if k != "version"}, "unsupported genotype version"),
    "a million channels": (_genotype(encoder__0__layers__0__channels=10**6), "outside [1, 1024]"),
    "head of 10^9": (_genotype(head_channels=10**9), "outside [1, 1024]"),
    "negative channels": (_genotype(decoder__0__layers__0__channels=-8), "outside [1, 1024]"),
    "channels as text": (_genotype(encoder__0__layers__0__channels="8"), "must be an integer"),
    "channels as float": (_genotype(encoder__0__layers__0__channels=8.0), "must be an integer"),
    "true as a number": (_genotype(stages=True), "must be an integer"),
    "10^4 stages": (_genotype(stages=10**4), "outside [1, 16]"),
    "1000 layers": (_genotype(encoder__0__layers=[{"op": "conv_3x3", "channels": 8}] * 1000), "more than the limit"),
    "unknown field": ({**GOOD_GENOTYPE, "__class__": "x"}, "unknown field"),
    "unknown space": (_genotype(space="evil"), "unknown search space"),
    "not an object": ([1, 2, 3], "not a restore genotype"),
    "hinas too wide": ({"format": "restore-genotype", "version": 1, "space": "hinas", "base_width": 10**6,
                        "cell": [{"inputs": [0, 1], "ops": ["conv_3x3", "conv_3x3"]}], "widths": [0]},
                       "outside [1, 256]"),
}


@pytest.fixture
def no_layers_built(monkeypatch):
    """Fail the test if any real (non-meta) conv layer is constructed."""
    import torch

    built = []
    original = torch.nn.Conv2d.__init__

    def watched(self, *args, **kwargs):
        device = kwargs.get("device") or torch.get_default_device()
        if torch.device(device).type != "meta":
            built.append(args)
            raise AssertionError(f"a Conv2d{args} was built from an untrusted genotype")
        original(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Conv2d, "__init__", watched)
    return built


@pytest.mark.parametrize("case", HOSTILE_GENOTYPES)
def test_hostile_genotypes_are_refused_before_any_layer_is_built(tmp_path, no_layers_built, case):
    import json

    from restore.errors import RestoreError
    from restore.models.genotype import load_genotype

    data, message = HOSTILE_GENOTYPES[case]
    path = tmp_path / "genotype.json"
    path.write_text(json.dumps(data))
    with pytest.raises(RestoreError, match=message.replace("[", r"\[").replace("^", r"\^")):
        load_genotype(path)
    result, _ = invoke("info", path)  # loads and builds the network to describe it
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert message in result.output
    assert not no_layers_built


def test_malformed_genotype_files_are_one_line_errors(tmp_path, no_layers_built):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)  # 400 kB: under the size limit, over the parser's stack
    big = tmp_path / "big.json"
    big.write_text(" " * 2_000_000 + "{}")
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "restore-genotype", ')
    for path, message in ((deep, "nested too deeply"), (big, "larger than 1 MB"), (broken, "not valid JSON")):
        result, _ = invoke("info", path)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not no_layers_built


def test_a_genotype_too_big_in_total_is_refused_without_allocating(tmp_path, no_layers_built):
    """Every field within its bound, but 47 layers of 1024-channel 5×5 convs ask for 1.26 G
    weights (5 GB): the parameter count comes from a build on the meta device, which
    allocates nothing, and the real build never starts."""
    import json

    layers = [{"op": "conv_5x5", "channels": 1024}] * 16
    huge = _genotype(name="huge", head_channels=1024, encoder=[
        {"layers": layers, "sample": {"op": "area", "channels": 1024}}], decoder=[
        {"layers": layers, "sample": {"op": "nearest", "channels": 1024}},
        {"layers": layers[:-1], "sample": None, "fuse_channels": 1024}])
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(huge))

    result, _ = invoke("info", path)
    assert result.exit_code == 2, result.output
    assert "genotype 'huge' asks for 1,263 M parameters, above the limit of 50 M; refusing to build it" in result.output
    assert not no_layers_built

    # memory, in a fresh process: this one's RSS moves with what earlier tests and imports left
    small = tmp_path / "small.json"
    small.write_text(json.dumps(GOOD_GENOTYPE))
    grown = _peak_rss_growth_mb(["info", small], ["info", path])
    assert grown["codes"] == [0, 2], grown
    assert grown["mb"] < 200, grown  # the weights alone would be 5 GB


_PEAK_RSS_SCRIPT = """
import json, sys
from typer.testing import CliRunner
from restore.cli import app

def peak_mb():  # VmHWM: the most this process has ever held, transient peaks included
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("no VmHWM in /proc/self/status")

warm, measured = json.loads(sys.argv[1])
codes = [CliRunner().invoke(app, warm).exit_code]  # imports and first-use allocations happen here
before = peak_mb()
codes.append(CliRunner().invoke(app, measured).exit_code)
print(json.dumps({"codes": codes, "mb": peak_mb() - before, "before_mb": before}))
"""


def _peak_rss_growth_mb(warm_up: list, measured: list) -> dict:
    """Run `restore *warm_up` then `restore *measured` in a new Python process; how much the
    second raised the process's peak RSS (MB), and both exit codes."""
    import json
    import subprocess
    import sys

    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc (Linux)")
    args = json.dumps([[str(a) for a in warm_up], [str(a) for a in measured]])
    done = subprocess.run([sys.executable, "-c", _PEAK_RSS_SCRIPT, args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_weights_are_read_as_safetensors_only(tmp_path):
    """A run folder whose best.safetensors is really a pickle that would run code when
    unpickled: refused in one line, and the code never runs."""
    import json
    import pickle  # only to build the hostile file

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    run = tmp_path / "run"
    run.mkdir()
    (run / "genotype.json").write_text(json.dumps(GOOD_GENOTYPE))
    (run / "best.safetensors").write_bytes(pickle.dumps({"weights": Payload()}))
    src = tmp_path / "a.png"
    _gray(20, 16).save(src)
    result, _ = invoke("denoise", src, "--model", run, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "cannot read weights" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_tampered_zoo_weights_are_refused_before_they_are_read(tmp_path, monkeypatch):
    """The end-to-end path of tests/test_registry.py's sha256 check: `restore denoise` with
    a zoo whose default weights had one byte changed never opens them as tensors."""
    import shutil

    import safetensors.torch

    import restore.zoo.registry as registry

    zoo = tmp_path / "zoo"
    shutil.copytree(registry._zoo_dir(), zoo, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    entry = registry.default_entry("denoise", 1)
    weights = zoo / entry.folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(registry, "_zoo_dir", lambda: zoo)
    monkeypatch.setattr(safetensors.torch, "load_file", lambda *a, **k: pytest.fail("tampered weights were read"))
    src = tmp_path / "a.png"
    _gray(20, 16).save(src)
    result, _ = invoke("denoise", src, "-o", tmp_path / "out")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert f"weights of {entry.name!r} fail the sha256 check" in result.output and "refusing to load" in result.output


def test_onnx_runtime_reads_onnx_only_from_the_users_path(tmp_path, monkeypatch):
    """Without --onnx-file the ONNX Runtime backend exports the model in memory and reads
    no .onnx file from anywhere; with it, exactly the user's file is read."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import torch

    from restore.export.ort_backend import OnnxRuntimeBackend
    from restore.zoo.registry import ModelEntry

    import restore.export.onnx as export_onnx

    reads, exported = [], []
    real_read_bytes, real_export = Path.read_bytes, export_onnx.export_onnx_model
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self) or real_read_bytes(self))
    monkeypatch.setattr(export_onnx, "export_onnx_model", lambda *a, **k: exported.append(real_export(*a, **k)) or exported[-1])
    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    entry = ModelEntry("one-conv", "denoise", 1)
    OnnxRuntimeBackend.for_model(net, entry=entry, device="cpu")
    assert len(exported) == 1 and not [p for p in reads if p.suffix == ".onnx"]

    user_file = tmp_path / "mine.onnx"
    user_file.write_bytes(exported[0].SerializeToString())  # the same graph, now a file the user names
    reads.clear()
    backend = OnnxRuntimeBackend.for_model(net, entry=entry, device="cpu", onnx_path=user_file)
    assert [p for p in reads if p.suffix == ".onnx"] == [user_file]
    assert backend(torch.rand(1, 1, 8, 8)).shape == (1, 1, 8, 8)
