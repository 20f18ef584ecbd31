"""Stopping worker threads after an error or an interrupt without hanging on one stuck in network I/O.

A worker notices cancellation between chunks; one blocked on a stalled connection may not get its
next chunk for a whole read timeout, times every retry. So a run that is being stopped gives its
workers ``CANCEL_GRACE`` seconds and then leaves the stragglers behind: they hold no file the
caller still removes, and the CLI exits without joining them.
"""

from __future__ import annotations

import threading
from concurrent.futures import Executor, Future, wait
from typing import Iterable

__all__ = ["CANCEL_GRACE", "stop_workers", "lingering_workers"]

CANCEL_GRACE = 2.0
"""Seconds a stopping run waits for its workers to notice."""


def stop_workers(executor: Executor, futures: Iterable[Future]) -> None:
    """Cancel what has not started and wait at most ``CANCEL_GRACE`` for what is running."""
    executor.shutdown(wait=False, cancel_futures=True)
    wait(list(futures), timeout=CANCEL_GRACE)


def lingering_workers() -> list[threading.Thread]:
    """Non-daemon threads other than the main one still alive: what interpreter exit would wait for."""
    main = threading.main_thread()
    return [t for t in threading.enumerate() if t is not main and not t.daemon and t.is_alive()]
