"""Worker processes that die with their parent.

A SIGKILLed parent runs no cleanup, so pool workers it started would be reparented to init and keep
working (writing shards or videos nobody asked for). `die_with_parent` asks Linux to kill a worker
when its parent dies (`PR_SET_PDEATHSIG`); pass it as a pool initializer.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (a SIGKILLed parent runs no cleanup,
    and an orphaned worker would keep writing shards). Elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        logger.debug("prctl(PR_SET_PDEATHSIG) unavailable; workers may outlive a killed parent")
        return
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)
