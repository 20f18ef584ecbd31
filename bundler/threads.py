"""Stopping worker threads after an error or an interrupt without hanging on one stuck in network I/O.

A worker notices cancellation between chunks; one blocked on a stalled connection may not get its
next chunk for a whole read timeout, times every retry. So a run that is being stopped gives its
workers ``CANCEL_GRACE`` seconds and then leaves the stragglers behind: they hold no file the
caller still removes, and the CLI exits without joining them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from concurrent.futures import Executor, Future, wait

__all__ = ["CANCEL_GRACE", "Cancelled", "lingering_workers", "stop_workers"]

CANCEL_GRACE = 2.0
"""Seconds a stopping run waits for its workers to notice."""


class Cancelled(BaseException):
    """Raised inside a worker once its run is being stopped (an error elsewhere, or an interrupt).

    A ``BaseException`` so that no ``except Exception`` between the worker and its run (a retry loop,
    an error mapping) takes it for a network or file error.
    """


def stop_workers(executor: Executor, futures: Iterable[Future]) -> None:
    """Cancel what has not started and wait at most ``CANCEL_GRACE`` for what is running."""
    executor.shutdown(wait=False, cancel_futures=True)
    # A future cancelled by the shutdown never counts as done for wait(): leave those out, or every stop
    # would wait the whole grace.
    wait([future for future in futures if not future.cancelled()], timeout=CANCEL_GRACE)


EXIT_GRACE = 0.5
"""Seconds ``lingering_workers`` gives threads to end. A pool's worker ends a moment after its last task: on
a loaded machine it was still alive when the CLI looked, and was taken for a stuck one."""


def lingering_workers() -> list[threading.Thread]:
    """Non-daemon threads other than the main one still alive after ``EXIT_GRACE``: what interpreter exit
    would wait for."""
    main = threading.main_thread()
    threads = [t for t in threading.enumerate() if t is not main and not t.daemon]
    deadline = time.monotonic() + EXIT_GRACE
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [t for t in threads if t.is_alive()]
