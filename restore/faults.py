"""Fault-injection points for crash tests: make a run stop at a named point so a test can
SIGKILL it exactly there.

Unset (the normal case), `pause` is one environment lookup and returns.

``RESTORE_TEST_PAUSE=<point>[@<seconds>][,<point>…]`` makes the process sleep (default
3600 s, i.e. until the test kills it) the first time it reaches a listed point. Points:

``step/<n>``
    training or search: step n is done and logged, its checkpoint (if due) not yet written
``arch/<n>``
    search: inside the architecture update of step n (gradient computed, not yet applied)
``write-mid/<file name>``
    `restore.atomic.atomic_write`: half of the new bytes of that file are in the temp
    file, the rest are not written yet
``write-end/<file name>``
    the temp file is complete and fsynced, the rename over the old file has not happened

``RESTORE_TEST_PAUSED=<path>``: on pausing, the point's name is written to this file, so a
test knows the process has arrived (and kills it then, not some time later).
"""

from __future__ import annotations

import os
import time

PAUSE_ENV = "RESTORE_TEST_PAUSE"
PAUSED_ENV = "RESTORE_TEST_PAUSED"
DEFAULT_SECONDS = 3600.0

_reached: set[str] = set()


def pause(point: str) -> None:
    """Sleep here if RESTORE_TEST_PAUSE names this point (once per process and point)."""
    spec = os.environ.get(PAUSE_ENV)
    if not spec or point in _reached:
        return
    for item in spec.split(","):
        name, _, seconds = item.strip().partition("@")
        if name == point:
            _reached.add(point)
            marker = os.environ.get(PAUSED_ENV)
            if marker:  # renamed into place: a test polling for it never reads it half-written
                partial = f"{marker}.partial"
                with open(partial, "w", encoding="utf-8") as fh:
                    fh.write(point)
                os.replace(partial, marker)
            time.sleep(float(seconds) if seconds else DEFAULT_SECONDS)
            return
