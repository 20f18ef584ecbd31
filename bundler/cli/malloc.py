"""glibc malloc settings for a process that moves gigabytes through 1 to 4 MiB buffers.

Why: every compressed or decompressed frame and every network chunk is a fresh bytes object of
1 to 4 MiB. glibc serves blocks that large with ``mmap`` and unmaps them when they are freed, so each
one is touched anew: a page fault per 4 KiB page (fault counts and times: docs/benchmark.md).
Serving these blocks from the heap, and keeping freed memory for reuse, avoids the faults. Two arenas
keep peak RSS where it was; with one arena per thread, each of them would hold its own idle memory.

Only the process owner sets this, so it lives with the CLI. Each ``MALLOC_*`` environment variable
the user sets is left as it is, and on a C library without ``mallopt`` nothing happens.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["tune_malloc"]

_SETTINGS = {
    # mallopt parameter: (its environment variable, value)
    -1: ("MALLOC_TRIM_THRESHOLD_", 32 * 1024 * 1024),  # M_TRIM_THRESHOLD: keep this much free heap
    -3: ("MALLOC_MMAP_THRESHOLD_", 16 * 1024 * 1024),  # M_MMAP_THRESHOLD: mmap only above this
    -8: ("MALLOC_ARENA_MAX", 2),  # M_ARENA_MAX
}


def tune_malloc() -> None:
    """Apply ``_SETTINGS`` through glibc's ``mallopt``; call before any worker thread starts."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (macOS has no mallopt): the defaults stay
        return
    for parameter, (variable, value) in _SETTINGS.items():
        if variable not in os.environ:
            mallopt(ctypes.c_int(parameter), ctypes.c_int(value))
