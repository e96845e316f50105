"""The Gradio app: handlers called directly, then the served app through gradio_client.

The zoo may be empty while models train, so most tests use a stand-in catalog whose
"models" are fixed Gaussian blurs (a blur does raise PSNR at σ = 25). The shipped zoo is
exercised when it has a denoiser.
"""

from __future__ import annotations

import socket
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from restore.app.handlers import AUTO, AppService, Limits, RestorerCache, ZooCatalog, degradation_spec, load_upload
from restore.errors import RestoreError
from restore.io import read_image
from restore.metrics import psnr
from restore.restorer import Restorer
from restore.zoo.registry import ModelEntry

pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")  # gradio's own pandas deprecations
EXAMPLES = Path(__file__).resolve().parents[1] / "restore" / "examples"
ARGS = dict(model=AUTO, auto_sigma=True, sigma=25, try_kind="none", try_sigma=25, try_quality=20, ensemble=False)


class Blur(nn.Module):
    """5×5 Gaussian (s = 1) per channel; ignores a σ map channel if one is appended."""

    size_multiple = 1

    def __init__(self, channels: int):
        super().__init__()
        t = torch.arange(5.0) - 2
        g = torch.exp(-(t**2) / 2)
        kernel = torch.outer(g, g) / torch.outer(g, g).sum()
        self.channels = channels
        self.conv = nn.Conv2d(channels, channels, 5, padding=2, padding_mode="reflect", bias=False, groups=channels)
        with torch.no_grad():
            self.conv.weight.copy_(kernel.expand(channels, 1, 5, 5))

    def forward(self, x):
        return self.conv(x[:, : self.channels])


class FakeCatalog:
    ENTRIES = [
        ModelEntry("test-blur", "denoise", 1, noise_map=True, level_range=(0, 75), default=True, description="a blur"),
        ModelEntry("test-blur-fixed", "denoise", 1, description="a blur for one σ"),
        ModelEntry("test-blur-rgb", "derain", 3, default=True, description="a colour blur"),
    ]

    def __init__(self):
        self.loads = 0

    def entries(self):
        return list(self.ENTRIES)

    def default(self, task, channels):
        for e in self.ENTRIES:
            if e.task == task and e.default:
                return e
        raise RestoreError(f"no shipped model for task {task!r} yet (see `restore models`)")

    def load(self, entry, *, backend, device, tile):
        self.loads += 1
        return Restorer(Blur(entry.channels), entry, backend=backend, device=device, tile=tile)


@contextmanager
def serving(service, **options):
    """The app served on a free port of 127.0.0.1 (port 0: `launch` picks one, and picks again
    should another process take it first); yields (demo, url) and always stops the server."""
    pytest.importorskip("gradio")
    from restore.app import launch

    demo, url = launch(service, port=0, prevent_thread_lock=True, quiet=True, **options)
    try:
        yield demo, url
    finally:
        demo.close(verbose=False)


@pytest.fixture
def connect(tmp_path):
    """Opens gradio_client Clients (downloading into tmp_path unless told otherwise) and
    closes them all after the test, heartbeat threads included."""
    Client = pytest.importorskip("gradio_client").Client

    opened = []

    def open_client(url: str, downloads: Path | None = None):
        opened.append(Client(url, verbose=False, download_files=str(downloads or tmp_path)))
        return opened[-1]

    yield open_client
    for c in opened:
        c.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    return AppService(catalog=FakeCatalog(), limits=Limits(max_pixels=1_000_000), output_dir=tmp_path_factory.mktemp("out"))


def _clean(name="monarch.png"):
    return read_image(EXAMPLES / name).pixels


# --------------------------------------------------------------------------- handlers


def test_model_choices_per_task(service):
    assert service.model_choices("denoise") == [AUTO, "test-blur", "test-blur-fixed"]
    assert service.model_choices("derain") == [AUTO, "test-blur-rgb"]
    assert service.model_choices("deblock") == [AUTO]
    assert service.describe("denoise", AUTO) == "auto → **test-blur**"
    assert service.describe("deblock", AUTO) == "⚠️ no shipped model for task 'deblock' yet"
    with pytest.raises(RestoreError, match="no shipped model"):
        service.resolve("deblock", AUTO, 3)
    with pytest.raises(RestoreError, match="test-blur-rgb is a derain model; for denoise pick one of: auto, test-blur"):
        service.resolve("denoise", "test-blur-rgb", 3)


def test_scratch_folder_is_removed_with_the_service(tmp_path):
    import gc

    service = AppService(catalog=FakeCatalog())
    scratch = service.output_dir
    assert scratch.is_dir()
    del service
    gc.collect()  # the service is gone: so is its scratch folder (also at interpreter exit)
    assert not scratch.exists()
    given = AppService(catalog=FakeCatalog(), output_dir=tmp_path / "mine").output_dir
    gc.collect()
    assert given.is_dir()  # a folder the user chose is theirs


def test_try_it_beyond_the_trained_range_is_pointed_out():
    from restore.app.handlers import _outside_range

    deblock = ModelEntry("deblocker", "deblock", 1, level_range=(10, 90))
    assert _outside_range(deblock, "jpeg:95") == ["deblocker was trained for quality 10–90; at 95 it may do more harm than good"]
    assert _outside_range(deblock, "jpeg:20") == [] and _outside_range(deblock, None) == []
    denoise = FakeCatalog.ENTRIES[0]
    assert _outside_range(denoise, "awgn:25") == [] and _outside_range(denoise, "jpeg:95") == []
    assert _outside_range(FakeCatalog.ENTRIES[2], "rain:heavy") == []


def test_degradation_spec():
    assert degradation_spec("none") is None
    assert degradation_spec("Gaussian noise (σ)", sigma=25) == "awgn:25"
    assert degradation_spec("JPEG compression (quality)", quality=10.0) == "jpeg:10"
    assert degradation_spec("Rain streaks (heavy)") == "rain:heavy"
    assert degradation_spec("Rain streaks (torrent)") == "rain:torrent"
    assert degradation_spec("Rain streaks (textured, Rain100H-like)") == "rain:textured"
    with pytest.raises(RestoreError):
        degradation_spec("fog")


def test_try_it_denoise_improves_psnr(service):
    steps = []
    r = service.run(EXAMPLES / "monarch.png", task="denoise", degradation="awgn:25", progress=lambda f, m: steps.append(f))
    assert r.after.shape == r.before.shape == (256, 256)
    assert r.metrics["psnr_out"] > r.metrics["psnr_in"] + 3 and r.metrics["ssim_out"] > r.metrics["ssim_in"]
    assert 20 <= r.sigma <= 30  # estimated
    assert steps[-1] == 1.0 and steps == sorted(steps)
    saved = read_image(r.download)
    assert r.download.suffix == ".png" and saved.pixels.shape == (256, 256, 1)
    assert "PSNR" in r.summary and "parameters" in r.summary and "GFLOPs/MP" in r.summary
    again = service.run(EXAMPLES / "monarch.png", task="denoise", degradation="awgn:25")
    assert again.metrics == r.metrics  # try-it noise is seeded


def test_denoise_uploaded_noisy_image(service):
    r = service.run(EXAMPLES / "monarch_noisy_s25.png", task="denoise", sigma=25)
    clean = _clean()
    assert r.after.shape == clean.shape[:2] and not r.metrics
    assert psnr(r.after / 255.0, clean[..., 0], data_range=1.0) > psnr(r.before / 255.0, clean[..., 0], data_range=1.0) + 3
    assert "σ = 25.0" in r.summary


def test_colour_image_and_sigma_notes(service):
    r = service.run(EXAMPLES / "birds_noisy_s25.png", task="denoise", model="test-blur-fixed", sigma=30)
    assert r.after.shape == (321, 481, 3) and r.sigma is None
    assert any("not used" in n for n in r.notes) and "channel by channel" in r.summary


def test_camera_like_noise_is_pointed_out(service, tmp_path, save_with_correlated_noise):
    """Blind σ on noise shared between neighbouring pixels: a note names the camera-noise task
    (with the shipped zoo, its model); white noise gets no such note."""
    r = service.run(save_with_correlated_noise(_clean()[..., 0], tmp_path / "camera.png"), task="denoise")
    assert [n for n in r.notes if "correlated between neighbouring pixels" in n] == [
        "The noise is correlated between neighbouring pixels, as camera noise is, and a Gaussian-noise model leaves much of it in."]
    assert not service.run(EXAMPLES / "monarch_noisy_s25.png", task="denoise").notes
    zoo_note = AppService(catalog=ZooCatalog(), output_dir=tmp_path)._correlated_noise_note()
    assert zoo_note.endswith("pick the task “Real camera noise” (denoise-real).")


def test_restorer_cache_loads_once_under_concurrency():
    catalog = FakeCatalog()
    cache = RestorerCache(catalog, backend="torch", device="cpu", tile=None)
    slots = []
    threads = [threading.Thread(target=lambda: slots.append(cache.get(FakeCatalog.ENTRIES[0]))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert catalog.loads == 1 and len({id(s) for s in slots}) == 1


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make, message", [
    (lambda d: _write(d / "noise.png", np.random.default_rng(0).bytes(4096)), "cannot read the upload"),
    (lambda d: _write(d / "notes.txt", b"just some text\n" * 20), "cannot read the upload"),
    (lambda d: _write(d / "empty.png", b""), "empty"),
    (lambda d: d / "missing.png", "no such file"),
    (lambda d: None, "upload an image"),
])
def test_bad_uploads_give_one_clear_line(service, tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(RestoreError) as info:
        service.run(path, task="denoise")
    text = str(info.value)
    assert message in text and "\n" not in text and str(tmp_path) not in text


def test_upload_limits(tmp_path):
    big = tmp_path / "big.png"
    Image.new("L", (1200, 1000)).save(big)
    with pytest.raises(RestoreError, match=r"1200×1000 = 1\.2 MP, above the limit of 1 MP$"):
        load_upload(big, Limits(max_pixels=1_000_000))
    with pytest.raises(RestoreError, match="above the upload limit"):
        load_upload(big, Limits(max_upload_bytes=100))
    tiny = tmp_path / "tiny.png"
    Image.new("L", (8, 8)).save(tiny)
    with pytest.raises(RestoreError, match="at least 16×16"):
        load_upload(tiny, Limits())


def test_onnx_backend_matches_torch(service, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    onnx = AppService(catalog=FakeCatalog(), backend="onnx", output_dir=tmp_path)
    a, b = (s.run(EXAMPLES / "monarch.png", task="denoise", degradation="awgn:25") for s in (service, onnx))
    assert "onnxruntime" in b.summary
    assert np.abs(a.after.astype(int) - b.after.astype(int)).max() <= 1


def test_zoo_catalog_end_to_end(tmp_path, monkeypatch):
    """The real loading path (manifest, sha256, genotype, safetensors) on a temporary zoo
    holding an untrained modnas-b: plumbing only, so no quality is asserted."""
    from safetensors.torch import save_file

    import restore.zoo.publish as publish
    import restore.zoo.registry as registry
    from restore.io import write_image
    from restore.models.build import build, resolve_genotype
    from restore.models.genotype import save_genotype

    run, zoo = tmp_path / "run", tmp_path / "zoo"
    run.mkdir(), zoo.mkdir()
    genotype = resolve_genotype("modnas-b", in_channels=1, noise_map=True)
    save_file({k: v.contiguous() for k, v in build(genotype).state_dict().items()}, run / "best.safetensors")
    save_genotype(genotype, run / "genotype.json")
    monkeypatch.setattr(registry, "_zoo_dir", lambda: zoo)
    monkeypatch.setattr(publish, "_zoo_dir", lambda: zoo)
    first = publish.publish(run, ModelEntry("zoo-test", "denoise", 1, noise_map=True, default=True))
    updated = publish.update_card("zoo-test", metrics={"BSD68 σ=25 PSNR": "12.34"})
    assert updated.sha256 == first.sha256 and updated.default
    assert registry.get_entry("zoo-test").metrics == {"BSD68 σ=25 PSNR": "12.34"}
    assert "| BSD68 σ=25 PSNR | 12.34 |" in (zoo / "zoo-test" / "card.md").read_text(encoding="utf-8")

    small = write_image(tmp_path / "small.png", _clean()[:64, :96])
    r = AppService(output_dir=tmp_path / "out").run(small, task="denoise", degradation="awgn:25")
    assert r.after.shape == (64, 96) and r.model == "zoo-test" and "M parameters" in r.summary


def test_shipped_zoo_denoiser(tmp_path):
    try:
        ZooCatalog().default("denoise", 1)
    except RestoreError:
        pytest.skip("the zoo has no denoising model yet")
    service = AppService(output_dir=tmp_path)
    r = service.run(EXAMPLES / "monarch.png", task="denoise", degradation="awgn:25")
    assert r.metrics["psnr_out"] > r.metrics["psnr_in"] + 3
    # the checkbox: this request only, averaged over 8 flips/rotations (+0.15 dB here), and said so
    averaged = service.run(EXAMPLES / "monarch.png", task="denoise", degradation="awgn:25", ensemble=True)
    assert averaged.metrics["psnr_out"] > r.metrics["psnr_out"] + 0.08
    assert "×8 self-ensemble" in averaged.summary and "×8" not in r.summary
    again = service.run(EXAMPLES / "monarch.png", task="denoise", degradation="awgn:25")
    assert again.metrics == r.metrics  # the cached restorer was not left averaging


# --------------------------------------------------------------------------- CLI


def test_cli_help_does_not_import_gradio():
    import subprocess

    code = ("import sys; from typer.testing import CliRunner; from restore.cli import app; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0 and ' app ' in r.output; "
            "assert 'gradio' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_cli_app_without_gradio(monkeypatch):
    from typer.testing import CliRunner

    from restore.cli import app

    monkeypatch.setitem(sys.modules, "gradio", None)  # makes `import gradio` fail
    r = CliRunner().invoke(app, ["app", "--port", "1"])
    assert r.exit_code == 2 and "pip install 'restore[app]'" in r.output


# --------------------------------------------------------------------------- served app


@pytest.fixture(scope="module")
def served(service):
    with serving(service) as (_, url):
        yield url


def test_served_app_via_client(served, connect, tmp_path):
    from gradio_client import handle_file

    client = connect(served)
    (before, after), summary, download = client.predict(
        handle_file(str(EXAMPLES / "monarch_noisy_s25.png")), "denoise", **ARGS, api_name="/restore")
    clean = _clean()[..., 0]
    noisy, restored = (np.asarray(read_image(p).pixels[..., 0]) for p in (before, after))
    assert restored.shape == clean.shape == read_image(download).pixels.shape[:2]
    assert psnr(restored, clean, data_range=1.0) > psnr(noisy, clean, data_range=1.0) + 3
    assert "This request" in summary

    bad = _write(tmp_path / "bad.png", b"not an image at all")
    with pytest.raises(Exception, match="cannot read the upload"):
        client.predict(handle_file(str(bad)), "denoise", **ARGS, api_name="/restore")
    # the server survived and still answers
    _, summary, _ = client.predict(handle_file(str(EXAMPLES / "monarch.png")), "denoise",
                                   **{**ARGS, "try_kind": "Gaussian noise (σ)"}, api_name="/restore")
    assert "| restored |" in summary and "×8" not in summary
    _, summary, _ = client.predict(handle_file(str(EXAMPLES / "monarch.png")), "denoise",
                                   **{**ARGS, "ensemble": True}, api_name="/restore")
    assert "×8 self-ensemble" in summary
    # an API call names another task's model directly (the list follows the task only in a browser)
    _, summary, _ = client.predict(handle_file(str(EXAMPLES / "birds.png")), "derain",
                                   **{**ARGS, "model": "test-blur-rgb"}, api_name="/restore")
    assert "test-blur-rgb" in summary
    with pytest.raises(Exception, match="test-blur-rgb is a derain model"):
        client.predict(handle_file(str(EXAMPLES / "birds.png")), "denoise", **{**ARGS, "model": "test-blur-rgb"},
                       api_name="/restore")


@pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")
def test_port_zero_picks_another_port_when_one_is_taken(service, monkeypatch):
    """`launch(port=0)` picks a free port; if another process binds it first, it picks again;
    `on_ready` hears the URL only once the server listens."""
    import gc

    import httpx

    import restore.app

    pick = restore.app._free_port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        picks = iter([busy])  # first the taken port, then real picks
        monkeypatch.setattr(restore.app, "_free_port", lambda: next(picks, None) or pick())
        ready = []
        with serving(service, on_ready=ready.append) as (_, url):
            assert next(picks, None) is None  # the taken port was tried
            assert ready == [url]  # told once, with the port actually served
            port = int(url.rstrip("/").rsplit(":", 1)[1])
            assert port != busy and url == f"http://127.0.0.1:{port}/"
            assert httpx.get(url, timeout=30).status_code == 200
    # gradio does not close the socket it probes a taken port with: finalise it here, under
    # this test's warning filter, rather than in whichever test runs the garbage collector next
    gc.collect()


def test_app_on_a_taken_port_says_so_in_one_line():
    from typer.testing import CliRunner

    from restore.cli import app

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["app", "--port", str(busy)])
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: cannot serve on 127.0.0.1:{busy}: the port is already in use "
                                     "(pick another with --port)")


# uvicorn's server thread ends with SystemExit on a failed bind (Python ignores that in threads)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_app_on_an_address_this_machine_lacks_says_so_in_one_line():
    """uvicorn's own bind error log is muted: the one error line says it."""
    from typer.testing import CliRunner

    from restore.cli import app

    result = CliRunner().invoke(app, ["app", "--host", "192.0.2.1", "--port", "7999"])  # TEST-NET-1: never local
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot serve on 192.0.2.1:7999: "), result.output
    assert lines[0].endswith("(check --host and --port)")
