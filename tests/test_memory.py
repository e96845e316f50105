"""Bounded memory (issue #8, item 3).

Restoring an image costs a small, fixed multiple of the image itself: a 2000×1500 RGB
photo restored by `restore denoise` in a child process (so nothing else in the test run
pollutes the figure) must not raise the peak RSS by more than 6× the image as float32
(36 MB). Before the fixes of issue #8 it took 10.3× (the σ estimate copied every patch in
float64, the σ map and the channel batch were full-size copies, the writer made float64
temporaries of the whole image); it now takes about 4×. The 8000×6000 figure is measured
by benchmarks/memory_8k.py (docs/RESULTS.md §5).

The pixel limit refuses images from their header, before any pixel is decoded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from restore.cli import app

REPO = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 2000, 1500
MAX_EXTRA_PER_IMAGE = 6.0

CHILD = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from restore.cli import app

    def rss_kb(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])

    small, big, model, out = sys.argv[1:5]
    def denoise(path):
        try:
            app(["denoise", path, "-o", out, "--model", model, "--overwrite"], prog_name="restore")
        except SystemExit as e:
            assert e.code in (0, None), e.code
    denoise(small)  # imports, model, first-call set-up: the fixed cost
    before = rss_kb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    except OSError:
        pass
    denoise(big)
    print(json.dumps({"before_kb": before, "peak_kb": rss_kb("VmHWM")}))
""")


def _tiny_run(folder: Path):
    """A run folder (genotype.json + best.safetensors) with the benchmark's tiny σ-map
    model, and the benchmark's noisy-photo writer."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("memory_8k", REPO / "benchmarks" / "memory_8k.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench.tiny_model_run(folder), bench.noisy_photo


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_restoring_a_photo_costs_a_small_multiple_of_it(tmp_path):
    run, noisy_photo = _tiny_run(tmp_path / "tiny-run")
    small = noisy_photo(tmp_path / "small.png", 64, 48)
    big = noisy_photo(tmp_path / "big.png", WIDTH, HEIGHT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(small), str(big), str(run), str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    with Image.open(tmp_path / "out" / "big_denoise.png") as out:
        assert out.size == (WIDTH, HEIGHT) and out.mode == "RGB"
    image_kb = WIDTH * HEIGHT * 3 * 4 / 1024
    extra = (figures["peak_kb"] - figures["before_kb"]) / image_kb
    print(f"peak RSS grew by {extra:.2f}× the float32 image ({figures})")
    assert extra < MAX_EXTRA_PER_IMAGE, figures


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared, oversubscribed CPU: see tests/test_bad_inputs.py
    yield
    torch.set_num_threads(before)


def test_max_pixels_option(tmp_path, one_thread):
    runner = CliRunner()
    src = tmp_path / "a.png"
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(src)
    result = runner.invoke(app, ["denoise", str(src), "-o", str(tmp_path / "out"), "--max-pixels", "1000"])
    assert result.exit_code == 2 and result.output.strip() == (
        f"error: '{src}' is 40×30 = 1200 pixels, above the limit of 1000 pixels (set --max-pixels)")
    result = runner.invoke(app, ["denoise", str(src), "-o", str(tmp_path / "out"), "--max-pixels", "0"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: --max-pixels must be a positive number of pixels, got 0"
    assert not (tmp_path / "out").exists()
    result = runner.invoke(app, ["denoise", str(src), "-o", str(tmp_path / "out"), "--max-pixels", "1200"])
    assert result.exit_code == 0, result.output


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path):
    """A 100-byte PNG declaring 9000×9000 (81 MP: under the default limit, so Pillow would
    decode it into 81 MB of pixels) is refused by --max-pixels from its header alone."""
    import struct
    import tracemalloc
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    src = tmp_path / "bomb.png"
    src.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 9000, 9000, 8, 0, 0, 0, 0))
                    + chunk(b"IDAT", zlib.compress(b"\0" * 9001 * 4)) + chunk(b"IEND", b""))
    assert src.stat().st_size < 200
    tracemalloc.start()
    try:
        result = CliRunner().invoke(app, ["denoise", str(src), "-o", str(tmp_path / "out"), "--max-pixels", "10000000"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 2 and "9000×9000 = 81 MP, above the limit of 10 MP" in result.output
    assert peak < 20 * 2**20  # the pixels alone would be 81 MB as bytes, 324 MB as float32
