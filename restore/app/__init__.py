"""The Gradio demo: upload or pick an image, restore it, compare before/after.

gradio is an optional extra (`pip install 'restore[app]'`), so it is imported only inside
these functions; `handlers.py` holds the logic and never imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import sys
from typing import Callable

from restore.app.handlers import AppService, Limits
from restore.errors import RestoreError

__all__ = ["AppService", "Limits", "build_demo", "launch", "require_gradio", "with_running_loop"]


def require_gradio():
    """The gradio module, or one clear line on how to get it."""
    # a local tool should not phone home unless asked to
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise RestoreError("the app needs gradio: pip install 'restore[app]'") from None
    return gradio


def build_demo(service: AppService | None = None):
    """The Blocks app around `service` (default: the shipped zoo, torch backend)."""
    require_gradio()
    from restore.app.ui import build_demo as build

    service = service or AppService()
    return with_running_loop(lambda: build(service))


PORT_IN_USE = "the port is already in use"


def launch(service: AppService | None = None, *, host: str = "127.0.0.1", port: int | None = 7860,
           share: bool = False, concurrency: int = 1, queue_size: int = 16, prevent_thread_lock: bool = False,
           quiet: bool = False, on_ready: Callable[[str], None] | None = None):
    """Build and serve the app; returns (demo, local_url). Blocks unless `prevent_thread_lock`.

    `port=0` serves on any free port (the URL tells which): a free port is picked and, should
    another process take it before the server binds, another one, a few times over.
    `on_ready(url)` runs once the server listens, before blocking (the CLI prints the URL there,
    so nothing says "running" for a server that never bound). Stop a non-blocking app with
    `demo.close()`.
    """
    service = service or AppService()
    require_gradio()
    from restore.app.ui import serve

    attempts = 5 if port == 0 else 1
    for attempt in range(attempts):
        demo = build_demo(service)
        tried = _free_port() if port == 0 else port
        try:
            with _quiet_bind_errors():
                url = with_running_loop(lambda: serve(
                    demo, service.limits, host=host, port=tried, share=share,
                    concurrency=concurrency, queue_size=queue_size, prevent_thread_lock=True, quiet=quiet))
            break
        except OSError as exc:  # port taken, bad host: one line, not gradio's traceback
            if attempt == attempts - 1:
                reason = _bind_failure(host, tried) or str(exc).split(". ")[0]
                hint = "pick another with --port" if reason == PORT_IN_USE else "check --host and --port"
                raise RestoreError(f"cannot serve on {host}:{tried}: {reason} ({hint})") from None
    if on_ready is not None:
        on_ready(url)
    if not prevent_thread_lock and not getattr(sys, "ps1", sys.flags.interactive):  # as gradio does
        demo.block_thread()  # until Ctrl+C
    return demo, url


@contextlib.contextmanager
def _quiet_bind_errors():
    """uvicorn logs a failed bind itself ("ERROR: [Errno 99] …") before gradio raises; the
    RestoreError line says it once, so uvicorn's error log is muted while the server starts
    (a filter, not a level: uvicorn re-applies its logging config on start)."""
    logger = logging.getLogger("uvicorn.error")
    mute = lambda record: record.levelno < logging.ERROR  # noqa: E731
    logger.addFilter(mute)
    try:
        yield
    finally:
        logger.removeFilter(mute)


def _bind_failure(host: str, port: int | None) -> str | None:
    """Why `host:port` cannot be bound, or None if it can now. gradio's OSError carries no errno,
    so the reason is found by binding as the server does (SO_REUSEADDR: a port merely in
    TIME_WAIT is not taken)."""
    if not port:
        return None
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        return PORT_IN_USE if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
    return None


def _free_port() -> int:
    """A port nobody listens on now (it may be taken again before the server binds: `launch` retries)."""
    with socket.socket() as s:
        s.bind(("", 0))  # free on every interface, so on `host` too
        return s.getsockname()[1]


def with_running_loop(fn):
    """`fn()` with an asyncio event loop running in this thread, closed afterwards.

    Outside a running loop, gradio (`gradio.utils.safe_get_lock`, 12 times per launched app
    in gradio 6) makes a new event loop for every asyncio lock it creates, sets it as this
    thread's loop and never closes it: each is dropped with a ResourceWarning ("unclosed
    event loop" and its two sockets) and the last one lingers until something replaces it,
    warning then, in someone else's code. With a loop running, gradio only makes the locks,
    which bind to the server's own loop when first used.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return fn()  # already inside a loop (a notebook): gradio makes no loops of its own

    async def call():
        return fn()

    loop = asyncio.new_event_loop()  # not made this thread's current loop: nothing is left behind
    try:
        return loop.run_until_complete(call())
    finally:
        loop.close()
