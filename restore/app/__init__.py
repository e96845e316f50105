"""The Gradio demo: upload or pick an image, restore it, compare before/after.

gradio is an optional extra (`pip install 'restore[app]'`), so it is imported only inside
these functions; `handlers.py` holds the logic and never imports it.
"""

from __future__ import annotations

import os

from restore.app.handlers import AppService, Limits
from restore.errors import RestoreError

__all__ = ["AppService", "Limits", "build_demo", "launch", "require_gradio"]


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

    return build(service or AppService())


def launch(service: AppService | None = None, *, host: str = "127.0.0.1", port: int | None = 7860,
           share: bool = False, concurrency: int = 1, queue_size: int = 16, prevent_thread_lock: bool = False,
           quiet: bool = False):
    """Build and serve the app; returns (demo, local_url). Blocks unless `prevent_thread_lock`."""
    service = service or AppService()
    demo = build_demo(service)
    from restore.app.ui import serve

    url = serve(demo, service.limits, host=host, port=port, share=share, concurrency=concurrency,
                queue_size=queue_size, prevent_thread_lock=prevent_thread_lock, quiet=quiet)
    return demo, url
