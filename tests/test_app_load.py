"""The web app under load and abuse (issue #8, item 6), through a served app and
gradio_client, with the cheap stand-in models of tests/test_app.py (fixed blurs).

- 20 concurrent requests for the same image all complete, at most `concurrency` at a time
  (identical requests used to make gradio serve each other truncated images, see
  restore/app/ui.py `_slider_files`);
- a full queue turns extra requests away with a clear message, and serves again after;

No timing: requests are held inside the handler on a gate the test opens, so "2 at a
time" and "the queue is full" are states the test waits for, on a busy machine or not.
- oversized, non-image, pixel-bomb, tiny and path-forging uploads get clear messages (or a
  refusal), and the server keeps serving.
"""

from __future__ import annotations

import struct
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from restore.app.handlers import AppService, Limits
from restore.io import read_image
from restore.metrics import psnr
from test_app import ARGS, EXAMPLES, FakeCatalog, connect, serving  # noqa: F401 (connect: a fixture)

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")
pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")
MAX_UPLOAD = 200_000


class CountingService(AppService):
    """Counts requests in flight and holds each one at `gate` (open unless a test closes it),
    so a test can fill the server's slots and queue and look at them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.active, self.peak, self.done = 0, 0, 0
        self.gate = threading.Event()
        self.gate.set()
        self._count = threading.Lock()

    def run(self, *args, **kwargs):
        with self._count:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            if not self.gate.wait(timeout=300):  # a safety net: the test opens it much sooner
                raise RuntimeError("the test never opened the gate")
            return super().run(*args, **kwargs)
        finally:
            with self._count:
                self.active -= 1
                self.done += 1

    @contextmanager
    def held(self):
        """Requests wait at the gate inside this block; it always opens on the way out."""
        self.gate.clear()
        try:
            yield
        finally:
            self.gate.set()


@contextmanager
def serve(tmp_path_factory, *, concurrency: int, queue_size: int):
    service = CountingService(catalog=FakeCatalog(), output_dir=tmp_path_factory.mktemp("app-out"),
                              limits=Limits(max_pixels=1_000_000, max_upload_bytes=MAX_UPLOAD))
    with serving(service, concurrency=concurrency, queue_size=queue_size) as (_, url):
        yield service, url


def wait_until(condition, what: str, timeout: float = 120):
    """Poll `condition` until true; the timeout only bounds a failure, it is not the test."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: two OpenMP threads on a shared, busy 2-core box make these small
    convolutions wait for time slices (see tests/test_bad_inputs.py)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def served(tmp_path_factory, one_thread):
    with serve(tmp_path_factory, concurrency=2, queue_size=32) as (service, url):
        yield service, url


def restore_job(client, path: Path, **overrides):
    from gradio_client import handle_file

    return client.submit(handle_file(str(path)), "denoise", **{**ARGS, **overrides}, api_name="/restore")


def _status(job):
    return job.status().code


def test_twenty_concurrent_requests_all_complete(served, connect, tmp_path):
    from gradio_client.utils import Status

    from restore.io import write_image

    service, url = served
    client = connect(url)
    before = service.done
    # the same image for everyone (as when users pick the same example): the worst case for caching
    noisy = write_image(tmp_path / "noisy.png", read_image(EXAMPLES / "monarch_noisy_s25.png").pixels[64:192, 64:192])
    clean = read_image(EXAMPLES / "monarch.png").pixels[64:192, 64:192, 0]
    with service.held():
        jobs = [restore_job(client, noisy) for _ in range(20)]
        # every request has reached the server: held in the handler or waiting in the queue...
        wait_until(lambda: service.active + sum(_status(j) == Status.IN_QUEUE for j in jobs) == 20,
                   "all requests in the handler or queued")
        assert service.active == service.peak == 2  # ...two at a time: `concurrency`, all of it, no more
    results = [job.result(timeout=300) for job in jobs]
    assert service.done - before == 20
    assert service.peak == 2
    reference = None
    for (before_png, after_png), summary, download in results:
        restored = read_image(after_png).pixels[..., 0]  # each a complete PNG (no truncated download)
        assert restored.shape == clean.shape == read_image(download).pixels.shape[:2]
        assert "This request" in summary
        reference = restored if reference is None else reference
        assert np.array_equal(restored, reference)  # every user gets the same, whole answer
    noisy_pixels = read_image(noisy).pixels[..., 0]
    assert psnr(reference, clean, data_range=1.0) > psnr(noisy_pixels, clean, data_range=1.0) + 3


def test_a_full_queue_turns_requests_away_clearly(tmp_path_factory, connect):
    from gradio_client.utils import Status

    with serve(tmp_path_factory, concurrency=1, queue_size=2) as (service, url):
        client = connect(url)
        small = EXAMPLES / "monarch.png"
        with service.held():
            first = restore_job(client, small)
            wait_until(lambda: service.active == 1, "the first request in the handler")
            # one in the handler, so the queue (2 places) takes two more and turns five away
            others = [restore_job(client, small) for _ in range(7)]
            wait_until(lambda: all(j.done() or _status(j) == Status.IN_QUEUE for j in others),
                       "every request queued or refused")
        outcomes = []
        for job in [first, *others]:
            try:
                job.result(timeout=120)
                outcomes.append("done")
            except Exception as exc:  # gradio_client's QueueError
                outcomes.append(str(exc))
        refused = [o for o in outcomes if o != "done"]
        assert outcomes.count("done") == 3 and len(refused) == 5, outcomes
        assert all(o == "Queue is full! Please try again." for o in refused), outcomes
        assert service.peak == 1
        _, summary, _ = restore_job(client, small).result(timeout=120)  # serving again
        assert "This request" in summary


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1) * 2)) + chunk(b"IEND", b""))


def test_abusive_uploads_get_clear_messages_and_the_server_keeps_serving(served, connect, tmp_path):
    import httpx
    from gradio_client import handle_file
    from PIL import Image

    _, url = served
    client = connect(url, tmp_path / "downloads")
    rng = np.random.default_rng(0)
    big = tmp_path / "big.png"
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > MAX_UPLOAD

    # oversized: the server refuses the upload itself (a browser or curl), the client before sending
    response = httpx.post(url + "gradio_api/upload", files={"files": ("big.png", big.read_bytes(), "image/png")})
    assert response.status_code == 413 and f"maximum allowed size of {MAX_UPLOAD} bytes" in response.text
    with pytest.raises(ValueError, match=f"exceeds the maximum file size of {MAX_UPLOAD} bytes"):
        client.predict(handle_file(str(big)), "denoise", **ARGS, api_name="/restore")

    cases = {
        "notes.txt": (b"some notes, not a picture\n" * 40, "cannot read the upload: not an image file"),
        "page.html": (b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>", "not an image file"),
        "random.png": (rng.bytes(5000), "cannot read the upload: not an image file"),
        "empty.png": (b"", "cannot read the upload: the file is empty"),
        "cut.png": ((EXAMPLES / "monarch.png").read_bytes()[:3000], "cannot read the upload: truncated or corrupt"),
        "bomb.png": (_png_header_only(30_000, 30_000), "the upload is 30000×30000 = 900 MP, above the limit of 1 MP"),
        "dot.png": (None, "it needs at least 16×16 pixels"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / name
        if data is None:
            Image.new("L", (1, 1)).save(path)
        else:
            path.write_bytes(data)
        with pytest.raises(Exception) as info:
            client.predict(handle_file(str(path)), "denoise", **ARGS, api_name="/restore")
        text = str(info.value)
        assert message in text, (name, text)
        assert "\n" not in text and str(tmp_path) not in text and "Traceback" not in text, (name, text)

    # a forged request naming a file on the server (not uploaded) is refused by gradio
    secret = tmp_path / "secret.png"
    secret.write_bytes((EXAMPLES / "monarch.png").read_bytes())
    data = [{"path": str(secret), "meta": {"_type": "gradio.FileData"}}, "denoise", *ARGS.values()]
    event = httpx.post(url + "gradio_api/call/restore", json={"data": data}).json()["event_id"]
    stream = httpx.get(url + f"gradio_api/call/restore/{event}", timeout=60).text
    assert "event: error" in stream and "monarch" not in stream and "This request" not in stream

    # still serving
    _, summary, _ = client.predict(handle_file(str(EXAMPLES / "monarch.png")), "denoise",
                                   **{**ARGS, "try_kind": "Gaussian noise (σ)"}, api_name="/restore")
    assert "| restored |" in summary
