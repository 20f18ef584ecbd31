"""The CLI's exit path: threads that are merely ending are not stuck ones (``lingering_workers``)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import bundler.threads
from bundler.threads import EXIT_GRACE, lingering_workers, stop_workers


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


def test_stopping_does_not_wait_for_jobs_that_never_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """A job cancelled before it started never counts as done for ``wait``: a stop that waited for it
    would hold every failed or interrupted run for the whole grace."""
    monkeypatch.setattr(bundler.threads, "CANCEL_GRACE", 60.0)
    release = threading.Event()
    executor = ThreadPoolExecutor(max_workers=1)
    running, queued = executor.submit(release.wait), executor.submit(lambda: None)
    executor.shutdown(wait=False, cancel_futures=True)
    release.set()
    running.result()
    assert queued.cancelled()
    started = time.monotonic()
    stop_workers(executor, [running, queued])
    assert time.monotonic() - started < 30.0
