"""Per-thread CPU priority: pictures yield to the verdict, the reject timer goes before both.

Linux keeps a nice value per thread, so a thread can change its own without touching the
process. Lowering priority is always allowed; raising it needs CAP_SYS_NICE (root, or a
systemd unit with `Nice=`/`AmbientCapabilities=CAP_SYS_NICE`) and is skipped quietly otherwise.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

log = logging.getLogger(__name__)


def renice_thread(step: int) -> bool:
    """Add `step` to the calling thread's nice value (clamped to -20..19); False where it is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread, max(-20, min(19, os.getpriority(os.PRIO_PROCESS, thread) + step)))
        return True
    except OSError as exc:  # PermissionError when raising priority without CAP_SYS_NICE
        log.debug("thread %s keeps its priority (%s)", threading.current_thread().name, exc)
        return False
