"""The one exception type for mistakes a user can make.

Everything a user can cause (missing file, unknown model, bad option, bad genotype…)
raises `RestoreError` with a one-line, human message. The CLI prints that message and
exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations


class RestoreError(Exception):
    """A user-facing error: the message is shown as-is, on one line."""
