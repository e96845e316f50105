"""The `restore` command end to end: restoring files, batch behaviour, one-line errors."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from restore.cli import app
from restore.metrics import psnr

EXAMPLES = Path(__file__).resolve().parents[1] / "restore" / "examples"
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, text):
    assert result.exit_code != 0
    out = result.output.strip()
    assert "Traceback" not in out
    assert text in out
    assert len(out.splitlines()) == 1, out


def test_help_is_fast_and_light():
    code = "import sys; from typer.testing import CliRunner; from restore.cli import app; r = CliRunner().invoke(app, ['--help']); " \
           "assert r.exit_code == 0; bad = [m for m in ('gradio', 'onnx', 'onnxruntime', 'tensorrt') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_no_help_text_is_eaten_as_markup():
    """Rich, which renders --help, drops anything that looks like a style tag, e.g.
    "[default: x]" written into a help string: every help text must show in full."""
    import re

    import typer

    command = typer.main.get_command(app)
    texts = [(name, param.name, getattr(param, "help", None) or "")
             for name, sub in command.commands.items() for param in sub.params]
    texts += [(name, "(doc)", sub.help or "") for name, sub in command.commands.items()]
    eaten = [(c, p, t) for c, p, t in texts if re.search(r"(?<!\\)\[[a-z][^\]]*\]", t)]
    assert not eaten


def test_warnings_print_one_line():
    """The installed command shows a warning's text, not the source line that raised it."""
    code = ("import sys, warnings\nfrom restore import cli\nsys.argv = ['restore', 'models']\n"
            "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
            "warnings.warn('skipping a.png: 10x10 is smaller than patch 96')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stderr == "warning: skipping a.png: 10x10 is smaller than patch 96\n"


def test_denoise_example_improves_psnr(tmp_path):
    result = invoke("denoise", EXAMPLES / "monarch_noisy_s25.png", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    out = tmp_path / "monarch_noisy_s25_denoise.png"
    clean = np.asarray(Image.open(EXAMPLES / "monarch.png"), dtype=np.float32) / 255
    noisy = np.asarray(Image.open(EXAMPLES / "monarch_noisy_s25.png"), dtype=np.float32) / 255
    restored = np.asarray(Image.open(out), dtype=np.float32) / 255
    assert restored.shape == clean.shape
    assert psnr(restored, clean, data_range=1) > psnr(noisy, clean, data_range=1) + 3.0
    assert "σ ≈" in result.output and "note:" not in result.output


def test_camera_like_noise_points_to_the_camera_noise_model(tmp_path, save_with_correlated_noise):
    """Noise shared between neighbouring pixels reads low to the blind estimate, and the
    Gaussian model leaves much of it: the line after the file says so and names the model."""
    clean = np.asarray(Image.open(EXAMPLES / "birds.png"), dtype=np.float32) / 255
    result = invoke("denoise", save_with_correlated_noise(clean, tmp_path / "photo.png"), "-o", tmp_path)
    assert result.exit_code == 0, result.output
    assert "correlated" in result.output and "try -m denoise-real" in result.output


def test_gray_picture_saved_as_rgb_gets_the_gray_model(tmp_path):
    """R = G = B files are denoised by the gray default (the colour one never saw such images)
    and come back as RGB, with the same pixels as the gray file gives."""
    Image.open(EXAMPLES / "monarch_noisy_s25.png").convert("RGB").save(tmp_path / "rgb.png")
    Image.open(EXAMPLES / "monarch_noisy_s25.png").convert("L").save(tmp_path / "gray.png")
    result = invoke("denoise", tmp_path / "rgb.png", tmp_path / "gray.png", "-o", tmp_path / "out", "--sigma", 25)
    assert result.exit_code == 0, result.output
    assert result.output.count("(denoise-gray, σ = 25.0") == 2
    rgb = Image.open(tmp_path / "out" / "rgb_denoise.png")
    assert rgb.mode == "RGB"
    gray = np.asarray(Image.open(tmp_path / "out" / "gray_denoise.png"))
    assert all(np.array_equal(np.asarray(rgb)[..., c], gray) for c in range(3))


def test_a_model_of_another_task_is_refused_with_the_right_command(tmp_path):
    image = EXAMPLES / "rainy.png"
    result = invoke("denoise", image, "-o", tmp_path, "-m", "derain")
    assert result.exit_code == 2
    assert "error: derain is a derain model: run it with `restore derain … -m derain`" in result.output
    assert not list(tmp_path.iterdir())  # nothing written
    result = invoke("denoise", EXAMPLES / "birds_noisy_s25.png", "-o", tmp_path, "-m", "denoise-real")
    assert result.exit_code == 0, result.output  # camera noise is denoising too
    assert (tmp_path / "birds_noisy_s25_denoise.png").is_file()


def test_only_r_equal_g_equal_b_counts_as_gray():
    from restore.pipeline import is_gray_stored_as_colour

    plane = np.random.default_rng(0).random((300, 40, 1), dtype=np.float32)
    gray = np.repeat(plane, 3, axis=2)
    assert is_gray_stored_as_colour(gray) and not is_gray_stored_as_colour(plane)
    gray[1, 2, 0] += 0.5 / 255  # JPEG rounding: still gray
    assert is_gray_stored_as_colour(gray)
    gray[280, 5, 2] += 2 / 255  # one coloured pixel in the second block of rows
    assert not is_gray_stored_as_colour(gray, rows=256)


def test_colour_image_and_no_tile_and_sigma(tmp_path):
    result = invoke("denoise", EXAMPLES / "birds_noisy_s25.png", "-o", tmp_path, "--sigma", 25, "--no-tile")
    assert result.exit_code == 0, result.output
    out = Image.open(tmp_path / "birds_noisy_s25_denoise.png")
    assert out.mode == "RGB" and out.size == Image.open(EXAMPLES / "birds_noisy_s25.png").size


def test_existing_output_and_input_are_protected(tmp_path):
    src = tmp_path / "a.png"
    Image.open(EXAMPLES / "monarch_noisy_s25.png").save(src)
    assert invoke("denoise", src).exit_code == 0
    before = (tmp_path / "a_denoise.png").read_bytes()
    assert_one_line_error(invoke("denoise", src), "already exists")
    assert (tmp_path / "a_denoise.png").read_bytes() == before
    assert invoke("denoise", src, "--overwrite").exit_code == 0


@pytest.mark.parametrize(
    "args,text",
    [
        (["denoise", "missing.png"], "missing.png"),
        (["denoise", "{img}", "--model", "no-such-model"], "unknown model 'no-such-model'"),
        (["denoise", "{img}", "--tile", "16", "--overlap", "16"], "must be larger than the overlap"),
        (["denoise", "{img}", "--backend", "magic"], "unknown backend"),
        (["denoise", "{img}", "--device", "tpu"], "unknown device"),
        (["denoise", "{bad}"], "cannot read"),
        (["denoise", "{img}", "--max-pixels", "100"], "above the limit"),
        (["info", "no-such-net"], "not a preset (modnas-ar, modnas-b), a zoo model (deblock-gray"),
        (["info", "modnas-b", "--size", "0"], "--size must be a positive"),
        (["denoise", "{img}", "{bad}", "--sigma", "nan"], "--sigma must be a finite number ≥ 0, got nan"),
        (["denoise", "{img}", "--sigma", "-5"], "--sigma must be a finite number ≥ 0, got -5"),
        (["denoise", "{img}", "--onnx-file", "{bad}"], "add --backend onnx"),
        (["eval", "{img}"], "is a file: give the folder that holds the images"),
        (["eval", "{dir}", "--limit", "0"], "--limit must be at least 1"),
        (["eval", "{dir}", "--clean-dir", "{other}"], "no clean partner for bad.png"),
    ],
)
def test_user_mistakes_print_one_line(tmp_path, args, text):
    img = tmp_path / "img.png"
    Image.open(EXAMPLES / "monarch_noisy_s25.png").save(img)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not a png")
    other = tmp_path / "other"
    other.mkdir()
    Image.open(EXAMPLES / "monarch.png").save(other / "img.png")
    args = [a.format(img=img, bad=bad, dir=tmp_path, other=other) for a in args]
    assert_one_line_error(invoke(*args), text)
    assert not list(tmp_path.glob("*_denoise.png"))


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(invoke("denoise", EXAMPLES / "monarch_noisy_s25.png", "-o", blocker), "is a file")


def test_batch_with_bad_files_processes_the_good_ones(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("one.png", "two.png"):
        Image.open(EXAMPLES / "monarch_noisy_s25.png").crop((0, 0, 96, 80)).save(folder / name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    result = invoke("denoise", folder, "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert "2 restored, 1 failed, of 3 file(s)" in result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["one_denoise.png", "two_denoise.png"]


def test_eval_scores_the_model_for_the_degradation(tmp_path):
    """Without -m, `-d jpeg:20` scores the deblocker, not the denoiser."""
    folder = tmp_path / "set"
    folder.mkdir()
    Image.open(EXAMPLES / "monarch.png").crop((0, 0, 96, 80)).save(folder / "m.png")
    result = invoke("eval", folder, "-d", "jpeg:20")
    assert result.exit_code == 0, result.output
    assert "| deblock-gray |" in result.output and "denoise-gray" not in result.output
    result = invoke("eval", folder, "-d", "jpeg:20", "--task", "denoise")
    assert "| denoise-gray (σ estimated) |" in result.output


@pytest.mark.parametrize("command", ["train", "search"])
def test_a_refused_run_leaves_no_empty_folders(tmp_path, command):
    (tmp_path / "kept").mkdir()  # an existing empty folder is the user's: left alone
    for run in (tmp_path / "runs" / "new", tmp_path / "kept"):
        result = invoke(command, "-d", tmp_path / "no-such-data", "--run", run, "--steps", 2)
        assert_one_line_error(result, "no-such-data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]


@pytest.mark.parametrize("command", ["train", "search"])
def test_bare_train_and_search_say_what_to_pass(tmp_path, command):
    """`restore train` / `restore search` with no data: one line naming --data, no run folder."""
    result = invoke(command, "--run", tmp_path / "run")
    assert_one_line_error(result, "no training folders given: pass --data DIR")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error of a machine without a CUDA GPU")
def test_training_on_a_missing_gpu_is_a_one_line_error(tiny_train_dir, tmp_path):
    result = invoke("train", "-d", tiny_train_dir, "--run", tmp_path / "run", "--steps", 2, "--device", "cuda")
    assert_one_line_error(result, "no CUDA GPU is available")
    assert not (tmp_path / "run").exists()


def test_models_info_and_eval(tmp_path, shared_dir):
    assert "denoise" in invoke("models").output
    info = invoke("info", "modnas-b")
    assert info.exit_code == 0 and "parameters: 435,838" in info.output
    set12 = tmp_path / "set12"
    set12.mkdir()
    for p in sorted((shared_dir / "data/test/Set12").glob("*.png"))[:2]:
        (set12 / p.name).write_bytes(p.read_bytes())
    md = tmp_path / "t.md"
    result = invoke("eval", set12, "-d", "awgn:25", "--markdown", md, "--json", tmp_path / "t.json")
    assert result.exit_code == 0, result.output
    assert "| input |" in md.read_text()


@pytest.mark.parametrize("command", ["info", "export", "bench"])
def test_commands_that_take_a_model_argument_also_take_dash_m(command):
    """`restore denoise -m NAME` is the spelling users learn first; the commands whose model is
    an argument take it too, and refuse two different names instead of picking one."""
    extra = ["--onnx"] if command == "export" else []
    named = invoke(command, "-m", "no-such-model", *extra)
    assert_one_line_error(named, "unknown")
    assert "no-such-model" in named.output
    both = invoke(command, "modnas-b", "-m", "denoise-gray", *extra)
    assert_one_line_error(both, "two models named")


def test_info_takes_dash_m():
    assert invoke("info", "-m", "modnas-b").output == invoke("info", "modnas-b").output


@pytest.mark.parametrize("command", ["train", "search"])
def test_a_degradation_given_as_data_gets_the_right_flag(tmp_path, command):
    """`-d` is the degradation in `eval` but the data in `train`/`search`."""
    result = invoke(command, "-d", "awgn:25", "--run", tmp_path / "run")
    assert result.exit_code == 2
    assert "error: -d/--data takes folders of training images; 'awgn:25' is a degradation: use --degradation awgn:25" in result.output
    assert not (tmp_path / "run").exists()
    result = invoke(command, "-d", tmp_path / "missing", "--run", tmp_path / "run")
    assert result.exit_code == 2 and "image folder not found" in result.output


def test_the_derainer_runs_its_own_tiles_unless_told_otherwise(tmp_path):
    """derain trained on 128² patches scores best on 128² tiles (RESULTS §3.5): that is its default tile,
    --tile still wins, and the denoiser keeps the papers' 64."""
    import restore
    from restore.runtime.tiling import TileConfig

    assert restore.load("derain").tile.tile == 128
    assert restore.load("derain", tile=TileConfig(tile=64)).tile.tile == 64
    assert restore.load("denoise-gray").tile.tile == 64
    folder = tmp_path / "set"
    folder.mkdir()
    Image.open(EXAMPLES / "monarch.png").convert("RGB").crop((0, 0, 72, 64)).save(folder / "m.png")
    result = invoke("eval", folder, "-d", "rain", "--tiled", "-m", "derain", "-m", "derain-hinas")
    assert result.exit_code == 0, result.output
    assert "| derain (128² tiles) |" in result.output and "| derain-hinas (64² tiles) |" in result.output
    result = invoke("eval", folder, "-d", "rain", "--tiled", "--tile", "96", "-m", "derain")
    assert "| derain (96² tiles) |" in result.output
    result = invoke("bench", "derain", "--size", "32", "--repeats", "1")
    assert result.exit_code == 0, result.output
    assert "tiles of 128)" in result.output
