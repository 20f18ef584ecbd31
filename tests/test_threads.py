"""The CLI's exit path: threads that are merely ending are not stuck ones (``lingering_workers``)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from bundler.threads import EXIT_GRACE, lingering_workers


def test_a_thread_ending_within_the_grace_does_not_linger() -> None:
    """As a pool's worker a moment after its last task: taken for a stuck one, it made the CLI skip
    interpreter exit (``os._exit``), which killed the test process that ran the CLI in-process."""
    ending = threading.Thread(target=time.sleep, args=(EXIT_GRACE / 5,))
    ending.start()
    assert lingering_workers() == []


def test_a_stuck_worker_lingers() -> None:
    release = threading.Event()
    executor = ThreadPoolExecutor(max_workers=1)
    try:
        executor.submit(release.wait)
        executor.shutdown(wait=False)
        assert len(lingering_workers()) == 1
    finally:
        release.set()
        executor.shutdown(wait=True)
