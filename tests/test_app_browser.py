"""The app in a real browser: headless Chromium driven over the DevTools protocol.

Upload through the page's file input, press Restore, wait for the before/after images,
screenshot. No browser is downloaded: Debian's `chromium` is used, or the test is skipped;
with RESTORE_REQUIRE_BROWSER=1 (set by .ci/run) a missing Chromium fails it instead, so CI
cannot pass without it. RESTORE_SAVE_SCREENSHOT=1 also copies the screenshot to
docs/figures/app.png.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from restore.app.handlers import AppService, Limits, ZooCatalog
from restore.errors import RestoreError

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
REQUIRED = os.environ.get("RESTORE_REQUIRE_BROWSER") == "1"

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")]


def unavailable(reason: str):
    """Skip, or fail where the browser test must run (RESTORE_REQUIRE_BROWSER=1, as in CI)."""
    if REQUIRED:
        pytest.fail(f"{reason}, and RESTORE_REQUIRE_BROWSER=1 says this test must run", pytrace=False)
    pytest.skip(reason)


def need_module(name: str, package: str):
    try:
        return __import__(name)
    except ImportError:
        unavailable(f"needs {package} (pip install -e '.[dev]')")


class Browser:
    """Just enough of the Chrome DevTools Protocol: commands on one page, JS evaluation, polling."""

    def __init__(self, chromium: str, user_data_dir: Path, width: int = 1280, height: int = 1100):
        websocket = need_module("websocket", "websocket-client")
        self.user_data_dir = user_data_dir
        self.log_path = user_data_dir.parent / "chromium.log"  # a file, not a pipe nobody drains
        self.ws = None
        with open(self.log_path, "wb") as log:
            # the flags this sandbox needs: no sandbox as root, no GPU, and no calls home
            # (Chromium's background connections are refused here, many at a time)
            self.proc = subprocess.Popen(
                [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={user_data_dir}", "--remote-debugging-port=0", f"--window-size={width},{height}",
                 "--hide-scrollbars", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            port = self._devtools_port()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as answer:
                pages = json.load(answer)
            url = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")
            self.ws = websocket.create_connection(url, timeout=60, suppress_origin=True)
        except BaseException:
            self.close()
            raise
        self.next_id = 0
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def _devtools_port(self, timeout: float = 60) -> int:
        """Chromium picks a free port (port 0) and writes it to DevToolsActivePort."""
        active = self.user_data_dir / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited ({self.proc.returncode}) before opening DevTools:\n{self.log()}")
            lines = active.read_text().splitlines() if active.exists() else []
            if len(lines) >= 2 and lines[0].isdigit():  # port, then the browser's path: written in full
                return int(lines[0])
            time.sleep(0.05)
        raise TimeoutError(f"chromium opened no DevTools port in {timeout:.0f} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def send(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:  # skip events until our answer arrives
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def js(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            error = self.js("document.querySelector('.toast-body.error')?.innerText")
            if error:  # the app reported a failure: no point waiting for the result
                raise AssertionError(f"the page shows an error: {error}")
            time.sleep(0.25)
        raise TimeoutError(f"waited {timeout:.0f} s for {expression}")

    def set_files(self, selector: str, *paths: Path) -> None:
        root = self.send("DOM.getDocument")["root"]["nodeId"]
        node = self.send("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        assert node, f"no element matches {selector}"
        self.send("DOM.setFileInputFiles", nodeId=node, files=[str(p) for p in paths])

    def click_text(self, selector: str, text: str) -> None:
        """Click the first element matching `selector` whose text contains `text`."""
        found = self.js(f"""(() => {{
            const el = [...document.querySelectorAll({json.dumps(selector)})].find(e => e.textContent.includes({json.dumps(text)}));
            if (el) el.click();
            return !!el; }})()""")
        assert found, f"no {selector} with text {text!r}"

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self) -> None:
        try:
            if self.ws is not None:
                self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _catalog():
    """The shipped zoo when it has a denoiser (a real screenshot), else the test stand-in."""
    try:
        ZooCatalog().default("denoise", 1)
        return ZooCatalog()
    except RestoreError:
        from test_app import FakeCatalog

        return FakeCatalog()


@pytest.fixture
def app_url(tmp_path):
    need_module("gradio", "gradio")
    from test_app import serving

    service = AppService(catalog=_catalog(), limits=Limits(max_pixels=4_000_000), output_dir=tmp_path / "out")
    with serving(service) as (_, url):
        yield url


@pytest.fixture
def browser(tmp_path):
    if CHROMIUM is None:
        unavailable("needs headless Chromium (apt-get install chromium)")
    b = Browser(CHROMIUM, tmp_path / "chromium-profile")
    yield b
    b.close()


LOADED = "img => img.complete && img.naturalWidth > 0"


def test_upload_restore_and_screenshot(browser, app_url, tmp_path):
    browser.send("Page.navigate", url=app_url)
    browser.wait_for("!!document.querySelector('#input-image input[type=file]')")

    browser.set_files("#input-image input[type=file]", REPO / "restore" / "examples" / "monarch.png")
    browser.wait_for(f"[...document.querySelectorAll('#input-image img')].some({LOADED})")
    # try-it mode: add σ 25 noise, so the page also shows PSNR/SSIM against the clean upload
    browser.click_text("#try-it button", "Try it")
    browser.wait_for("!!document.querySelector('#try-kind')")
    browser.click_text("#try-kind label", "Gaussian noise")
    browser.js("document.querySelector('#run-button').click()")

    browser.wait_for(f"(() => {{ const imgs = [...document.querySelectorAll('#result img')];"
                     f" return imgs.length >= 2 && imgs.every({LOADED}); }})()", timeout=90)
    browser.wait_for("document.querySelector('#facts').innerText.includes('PSNR')")
    time.sleep(0.5)  # let the toast-free page settle before the picture
    shot = browser.screenshot(tmp_path / "app.png")
    if os.environ.get("RESTORE_SAVE_SCREENSHOT") == "1":
        target = REPO / "docs" / "figures" / "app.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)

    sizes = browser.js("[...document.querySelectorAll('#result img')].map(i => [i.naturalWidth, i.naturalHeight])")
    assert sizes[:2] == [[256, 256], [256, 256]]
    assert shot.stat().st_size > 10_000
    facts = browser.js("document.querySelector('#facts').innerText")
    assert "restored" in facts and "This request" in facts
    assert browser.js("!document.querySelector('#download').disabled")
